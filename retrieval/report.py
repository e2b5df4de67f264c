"""Reports of a :func:`retrieval.run_benchmark` result: JSON, a markdown table and two PNG plots.

Plots are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
they work headless and leave the caller's matplotlib state alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def write_report(results: dict, out_dir, *, stem: str = "retrieval") -> dict[str, Path]:
    """Write ``results`` (from :func:`retrieval.run_benchmark`) under ``out_dir`` (created if needed).

    Returns:
        ``{"json", "markdown", "map_plot", "qps_plot"}`` -> paths: ``{stem}.json``, ``{stem}.md``,
        ``{stem}_map.png`` (mAP@R against code length, codes and baselines) and
        ``{stem}_qps.png`` (queries/s against code length).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "map_plot": out / f"{stem}_map.png", "qps_plot": out / f"{stem}_qps.png"}
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown_table(results))
    plot_map(results).savefig(paths["map_plot"])
    plot_qps(results).savefig(paths["qps_plot"])
    logger.info("retrieval report written to %s", out)
    return paths


def _describe(results: dict) -> str:
    s, sizes = results["search"], results["sizes"]
    return (f"database {sizes['database']} x {sizes['code_length']} ({sizes['database_dtype']}), "
            f"{sizes['queries']} queries, R = {results['R']}; backend {s['backend']} on {s['device']}, "
            f"index {s.get('index', s['index_kind'])} ({s['index_kind']}), {s['threads']} CPU threads")


def markdown_table(results: dict) -> str:
    """One row per length: mAP@R, P@R, R@R, random-subset mAP mean ± std, PCA mAP, q/s, speed-up."""
    R = results["R"]
    baselines = results.get("baselines") is not None
    lines = [f"# Retrieval with {results['name']}: quality and speed against code length", "",
             _describe(results) + ".", "", f"Timing: {results['timing']['method']}.", "",
             f"Metrics: an item is relevant when it shares a label with the query; P@{R} = relevant in the top "
             f"{R} / {R}; R@{R} = relevant in the top {R} / relevant in the database; AP@{R} = mean of "
             f"precision@k over the ranks k <= {R} holding a relevant item (0 if none), equal scores averaged "
             "over their orders; means over queries.", ""]
    head = ["length", f"mAP@{R}", f"P@{R}", f"R@{R}"]
    if baselines:
        head += [f"random-subset mAP@{R} (mean ± std, {results['baselines']['random_draws']} draws)", f"PCA mAP@{R}"]
    head += ["q/s", f"speed-up vs {results['reference_dim']}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for rec in results["lengths"]:
        c = rec["codes"]
        row = [str(rec["dim"]), f"{c['map']:.4f}", f"{c['precision']:.4f}", f"{c['recall']:.4f}"]
        if baselines:
            rs = rec["random_subset"]
            row += [f"{rs['map_mean']:.4f} ± {rs['map_std']:.4f}", f"{rec['pca']['map']:.4f}"]
        row += [f"{rec['qps']:.0f}", f"{rec['speedup']:.2f}x"]
        lines.append("| " + " | ".join(row) + " |")
    if results.get("speedup_at_1_16") is not None:
        lines += ["", f"Speed-up at 1/16 of the code length: {results['speedup_at_1_16']:.2f}x."]
    f = results.get("funnel")
    if f:
        lines += ["", (f"Funnel: shortlist of {f['shortlist_size']} with {f['short_dim']} dimensions, rerank with "
                       f"{f['rerank_dim']} ({f['rerank_device']}): mAP@{R} {f['map']:.4f} (full length "
                       f"{f['full_length_map']:.4f}, {f['map_delta_points']:+.2f} points), P@{R} {f['precision']:.4f}, "
                       f"R@{R} {f['recall']:.4f}; {f['qps']:.0f} q/s, {f['speedup']:.2f}x the full length "
                       f"(shortlist {f['shortlist_seconds']:.3f} s + rerank {f['rerank_seconds']:.3f} s).")]
    return "\n".join(lines) + "\n"


def _axes(title: str, ylabel: str):
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("code length m (dimensions, log2 scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def plot_map(results: dict) -> Figure:
    """mAP@R against code length: the prefixes, random subsets (mean ± std) and PCA; the funnel."""
    R, recs = results["R"], results["lengths"]
    dims = [r["dim"] for r in recs]
    fig, ax = _axes(f"{results['name']}: mAP@{R} against code length ({results['sizes']['database']} database rows)",
                    f"mAP@{R}")
    ax.plot(dims, [r["codes"]["map"] for r in recs], "o-", label=f"{results['name']} prefix (first m dims)")
    if results.get("baselines") is not None:
        ax.errorbar(dims, [r["random_subset"]["map_mean"] for r in recs],
                    yerr=[r["random_subset"]["map_std"] for r in recs], fmt="s--", capsize=3,
                    label=f"random m-subset (mean ± std, {results['baselines']['random_draws']} draws)")
        ax.plot(dims, [r["pca"]["map"] for r in recs], "^:", label="PCA to m dims")
    f = results.get("funnel")
    return _finish_plot(fig, ax, dims, f, "map", f and f"{f['shortlist_size']} shortlisted", "lower right")


def plot_qps(results: dict) -> Figure:
    """Queries/s against code length (log-log), with the funnel."""
    recs = results["lengths"]
    dims = [r["dim"] for r in recs]
    s = results["search"]
    index = s.get("index", s["index_kind"])
    fig, ax = _axes(f"{results['name']}: search speed, {s['backend']} on {s['device']}, {index}",
                    "queries per second (log scale)")
    ax.set_yscale("log")
    ax.plot(dims, [r["qps"] for r in recs], "o-",
            label=f"{s['index_kind']} search, best of {results['timing']['repeats']} rounds")
    f = results.get("funnel")
    return _finish_plot(fig, ax, dims, f, "qps", f and f"{f['speedup']:.1f}x full length", "upper right")


def _finish_plot(fig: Figure, ax, dims: list[int], funnel: dict | None, key: str, note: str | None,
                 legend_loc: str) -> Figure:
    """The funnel's point (its ``key`` figure at its short length), ticks at the lengths, the legend."""
    if funnel:
        ax.plot([funnel["short_dim"]], [funnel[key]], "*", markersize=14,
                label=f"funnel {funnel['short_dim']} -> {funnel['rerank_dim']} ({note})")
    ax.set_xticks(dims, [str(d) for d in dims], fontsize=8)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    return fig
