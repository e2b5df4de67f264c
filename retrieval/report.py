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

    ``results["inputs"]``, when the caller adds it, names what was benchmarked: a dict of role
    ("database", "queries", "run", ...) -> a dict such as ``{"path": ..., "content_id": ...}``
    or a plain value. The markdown lists it first, so every report names its inputs.

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


def _inputs(inputs: dict) -> list[str]:
    """One line per input role: its path and content id (or whatever the caller recorded)."""
    lines = ["Inputs:", ""]
    for role, value in inputs.items():
        if isinstance(value, dict):
            rest = ", ".join(f"{key} {item}" for key, item in value.items() if key != "path" and item is not None)
            text = f"`{value.get('path')}`" + (f" ({rest})" if rest else "")
        else:
            text = "none" if value is None else f"`{value}`"
        lines.append(f"- {role}: {text}")
    return lines + [""]


def _work(results: dict) -> list[str]:
    """The run's wall time against the estimate it started with (from the plan)."""
    plan = results.get("plan") or {}
    wall, est = plan.get("wall_seconds"), plan.get("estimated_seconds")
    if not wall:
        return []
    text = (f"Work: {wall['total']:.0f} s wall (sweep {wall['sweep']:.0f} s, baselines {wall['baselines']:.0f} s)")
    if est:
        text += (f"; estimated before the start: {est['total']:.0f} s, "
                 f"{plan['total_to_plain_sweep_units']:.2f}x the planned work of a plain sweep "
                 "(every query searched once at every length)")
    return [text + ".", ""]


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _speedups(results: dict) -> list[str]:
    """The speed-up at 1/16 with its spread over the rounds, and the load beside it."""
    s16, timing = results.get("speedup_at_1_16"), results["timing"]
    rounds = timing["repeats"]
    lines = []
    if s16 is not None:
        k = results["sizes"]["code_length"]
        lines.append(f"Speed-up at 1/16 of the code length ({k // 16} of {k} dimensions): median "
                     f"{s16['median']:.2f}x, range {s16['min']:.2f}x to {s16['max']:.2f}x over {rounds} timed "
                     f"round{'s' if rounds != 1 else ''}, each round's search paired with the same round's "
                     f"{results['reference_dim']}-dimension search.")
    load = timing.get("background_cpu")
    if load is not None:
        lines.append(f"Other processes took a median {_share(load['median'])} (at most {_share(load['max'])}) of "
                     "the machine's CPU during the timed searches; a loaded machine makes speed-ups move.")
    if not timing["interleaved"]:
        lines.append("The indexes did not fit the memory budget together: each length was rebuilt before its "
                     "search in every round, so the rounds stayed interleaved and the per-round pairing holds.")
    return lines


def markdown_table(results: dict) -> str:
    """The inputs, the chance level, then one row per length: mAP@R, P@R, R@R, random-subset mAP
    mean ± std and PCA mAP (with the prefix on the baselines' queries when they are a sample),
    q/s, speed-up median and range over the rounds; the speed-up at 1/16, the load, the funnel."""
    R = results["R"]
    base = results.get("baselines")
    lines = [f"# Retrieval with {results['name']}: quality and speed against code length", ""]
    if results.get("inputs"):
        lines += _inputs(results["inputs"])
    lines += [_describe(results) + ".", "", f"Timing: {results['timing']['method']}. The timed rounds searched "
              f"{results['timing'].get('query_sample', 'all queries')}.", "", *_work(results),
              f"Metrics: an item is relevant when it shares a label with the query; P@{R} = relevant in the top "
              f"{R} / {R}; R@{R} = relevant in the top {R} / relevant in the database; AP@{R} = mean of "
              f"precision@k over the ranks k <= {R} holding a relevant item (0 if none), equal scores averaged "
              "over their orders; means over queries.", ""]
    chance = results.get("chance")
    if chance is not None:
        lines += [f"Chance level: mAP@{R} {chance['map']:.4f} (class prior {chance['class_prior']:.4f}): "
                  f"{chance['definition']}.", ""]
    sampled = base is not None and base["queries"] < results["sizes"]["queries"]
    if base is not None:
        pca = f"PCA fitted on {base['pca_fit_rows']} rows" if base.get("pca", True) else "no PCA"
        lines += [f"Baselines at lengths {', '.join(map(str, base['dims'])) or 'none'} on {base['query_sample']}, "
                  f"{pca} ({base['choice']}). Spread: {base['spread']}.", ""]
    head = ["length", f"mAP@{R}", f"P@{R}", f"R@{R}"]
    if base is not None:
        head += ([f"prefix mAP@{R} on the baseline queries"] if sampled else []) + [
            f"random-subset mAP@{R} (mean ± std, {base['random_draws']} draws)", f"PCA mAP@{R}"]
    head += ["q/s", f"speed-up vs {results['reference_dim']} (median, range)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for rec in results["lengths"]:
        c = rec["codes"]
        row = [str(rec["dim"]), f"{c['map']:.4f}", f"{c['precision']:.4f}", f"{c['recall']:.4f}"]
        if base is not None:
            rs, pca, own = rec.get("random_subset"), rec.get("pca"), rec.get("codes_on_baseline_queries")
            row += ([f"{own['map']:.4f}" if own else "—"] if sampled else []) + [
                f"{rs['map_mean']:.4f} ± {rs['map_std']:.4f}" if rs else "—", f"{pca['map']:.4f}" if pca else "—"]
        row += [f"{rec['qps']:.0f}", _ratio(rec)]
        lines.append("| " + " | ".join(row) + " |")
    speed = _speedups(results)
    if speed:
        lines += [""] + [" ".join(speed)]
    f = results.get("funnel")
    if f:
        lines += ["", (f"Funnel: shortlist of {f['shortlist_size']} with {f['short_dim']} dimensions, rerank with "
                       f"{f['rerank_dim']} ({f['rerank_device']}): mAP@{R} {f['map']:.4f} (full length "
                       f"{f['full_length_map']:.4f}, {f['map_delta_points']:+.2f} points), P@{R} {f['precision']:.4f}, "
                       f"R@{R} {f['recall']:.4f}; {f['qps']:.0f} q/s, {_ratio(f)} the full length "
                       f"(shortlist {f['shortlist_seconds']:.3f} s + rerank {f['rerank_seconds']:.3f} s).")]
    return "\n".join(lines) + "\n"


def _ratio(rec: dict) -> str:
    """The speed-up's median and range over the rounds."""
    low, high = rec["speedup_range"]
    return f"{rec['speedup_median']:.2f}x ({low:.2f}-{high:.2f}x)"


def _axes(title: str, ylabel: str):
    fig = Figure(figsize=(7.5, 5.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("code length m (dimensions, log2 scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def plot_map(results: dict) -> Figure:
    """mAP@R against code length: the prefixes, random subsets (mean ± std) and PCA where they ran
    (with the prefix on the same queries when the baselines ran on a sample), the chance level (a
    random ranking's mAP@R), the funnel."""
    R, recs = results["R"], results["lengths"]
    dims = [r["dim"] for r in recs]
    fig, ax = _axes(f"{results['name']}: mAP@{R} against code length ({results['sizes']['database']} database rows)",
                    f"mAP@{R}")
    ax.plot(dims, [r["codes"]["map"] for r in recs], "o-", label=f"{results['name']} prefix (first m dims), all queries")
    if results.get("baselines") is not None:
        with_rs = [r for r in recs if r.get("random_subset")]
        with_pca = [r for r in recs if r.get("pca")]
        sample = results["baselines"].get("query_sample", "all queries")
        on = "all queries" if sample == "all queries" else "sampled queries"
        if sample != "all queries":  # the baselines' points sit beside the prefix on the same queries
            own = [r for r in recs if r.get("codes_on_baseline_queries")]
            ax.plot([r["dim"] for r in own], [r["codes_on_baseline_queries"]["map"] for r in own], "o", color="C0",
                    fillstyle="none", markersize=9, label="prefix, sampled queries")
            ax.set_title(f"{ax.get_title()}\nsampled queries: {sample}", fontsize=9)
        ax.errorbar([r["dim"] for r in with_rs], [r["random_subset"]["map_mean"] for r in with_rs],
                    yerr=[r["random_subset"]["map_std"] for r in with_rs], fmt="s--", capsize=3,
                    label=f"random m-subset (mean ± std, {results['baselines']['random_draws']} draws), {on}")
        ax.plot([r["dim"] for r in with_pca], [r["pca"]["map"] for r in with_pca], "^:", label=f"PCA to m dims, {on}")
    chance = results.get("chance")
    if chance is not None:
        ax.axhline(chance["map"], color="0.4", linestyle="-.", linewidth=1,
                   label=f"chance: a random ranking ({chance['map']:.3f})")
    f = results.get("funnel")
    return _finish_plot(fig, ax, dims, f, "map", f and f"{f['shortlist_size']} shortlisted")


def plot_qps(results: dict) -> Figure:
    """Queries/s against code length, with the funnel. The q/s axis is linear from 0, so a 1%
    difference looks like 1% (a log axis over 990-1,045 q/s made it look large)."""
    recs = results["lengths"]
    dims = [r["dim"] for r in recs]
    s = results["search"]
    index = s.get("index", s["index_kind"])
    fig, ax = _axes(f"{results['name']}: search speed, {s['backend']} on {s['device']}, {index}",
                    "queries per second")
    ax.plot(dims, [r["qps"] for r in recs], "o-",
            label=f"{s['index_kind']} search, best of {results['timing']['repeats']} rounds")
    ax.plot(dims, [r["qps_median"] for r in recs], ".:", label="median round")
    f = results.get("funnel")
    top = max([r["qps"] for r in recs] + ([f["qps"]] if f else []))
    ax.set_ylim(0, 1.08 * top)
    return _finish_plot(fig, ax, dims, f, "qps", f and f"{f['speedup_median']:.2f}x full length, median round")


def _finish_plot(fig: Figure, ax, dims: list[int], funnel: dict | None, key: str, note: str | None) -> Figure:
    """The funnel's point (its ``key`` figure at its short length), ticks at the lengths, and the
    legend below the axes, where it covers no curve."""
    if funnel:
        ax.plot([funnel["short_dim"]], [funnel[key]], "*", markersize=14,
                label=f"funnel {funnel['short_dim']} -> {funnel['rerank_dim']} ({note})")
    ax.set_xticks(dims, [str(d) for d in dims], fontsize=8)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
