"""What a run's figures say, in words and as numbers: the opening of every run report.

:func:`run_findings` reads the figures the other commands left (the eigenvalue estimates, the
retrieval results of ``eigenmap retrieve``, the probe's of ``eigenmap probe``) and returns one
machine-readable dict (written to ``RUN/report/report.json``); :func:`findings_lines` puts the
same dict into sentences. Nothing is judged from memory: each sentence names its figures.

Verdicts compare the code prefix of length m with the baselines at m, each scored on the same
queries (the baselines' sample when they ran on one): **level** when the
difference is at most :data:`LEVEL_RELATIVE` of the baseline's mAP or, for the random m-subset,
at most the standard deviation of its draws (a gap smaller than the baseline's own draw-to-draw
spread is not a finding); else **ahead** or **behind**.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["LEVEL_RELATIVE", "ORDERED_SPEARMAN", "run_findings", "findings_lines", "verdict"]

LEVEL_RELATIVE = 0.02  # a prefix within 2% of a baseline's mAP is level with it
ORDERED_SPEARMAN = -0.8  # at or below: the outputs are ordered by eigenvalue (the stop-grad promise)
PARTLY_ORDERED_SPEARMAN = -0.5


def verdict(prefix: float, baseline: float, spread: float = 0.0) -> dict:
    """``{"verdict": "ahead"|"level"|"behind", "difference": prefix - baseline, "relative": ...}``;
    ``spread``: the baseline's own standard deviation over its draws (0 for one figure)."""
    difference = prefix - baseline
    relative = difference / baseline if baseline > 0 else float("inf") if difference > 0 else 0.0
    tolerance = max(LEVEL_RELATIVE * abs(baseline), spread)
    word = "level" if abs(difference) <= tolerance else "ahead" if difference > 0 else "behind"
    return {"verdict": word, "difference": difference, "relative": relative}


def _speed(results: dict) -> Optional[dict]:
    """What the shortest length buys in speed over the full length: the per-round speed-up's median
    and range (each round times every length, so a round's ratio compares like with like), beside
    what the multiply-adds alone would give (k / m) and the database's size."""
    recs = results["lengths"]
    short, full = recs[0], recs[-1]
    if short["dim"] == full["dim"]:
        return None
    low, high = short["speedup_range"]
    return {"dim": short["dim"], "median": short["speedup_median"], "min": low, "max": high,
            "work_ratio": full["dim"] / short["dim"], "database": results["sizes"]["database"],
            "qps_short": short["qps"], "qps_full": full["qps"]}


def _retrieval(results: dict) -> dict:
    """The figures the findings read from ``retrieval.json``. The prefix is set beside a baseline
    only on the queries the baseline was scored on (``codes_on_baseline_queries``): when the
    baselines ran on a sample, the prefix's all-query mAP is another set of queries."""
    k, R = results["sizes"]["code_length"], results["R"]
    base = results.get("baselines") or {}
    lengths = []
    for rec in results["lengths"]:
        row = {"dim": rec["dim"], "fraction": rec["dim"] / k, "prefix": rec["codes"]["map"]}
        if rec.get("random_subset") is not None:
            rs, own = rec["random_subset"], rec["codes_on_baseline_queries"]["map"]
            row.update(prefix_on_baseline_queries=own, random_subset=rs["map_mean"], random_subset_std=rs["map_std"],
                       pca=rec["pca"]["map"] if rec.get("pca") else None)
            if rec["dim"] < k:  # at the full length every baseline is the code itself, re-ordered or rotated
                row["vs_random_subset"] = verdict(own, rs["map_mean"], rs["map_std"])
                if row["pca"] is not None:
                    row["vs_pca"] = verdict(own, row["pca"])
        lengths.append(row)
    return {"R": R, "code_length": k, "full_length_map": results["lengths"][-1]["codes"]["map"],
            "queries": results["sizes"]["queries"], "baseline_queries": base.get("query_sample"),
            "chance": results.get("chance"), "lengths": lengths, "speed": _speed(results),
            "backend": f"{results['search']['backend']} on {results['search']['device']}"}


def run_findings(*, spearman: Optional[float], eigenfunctions: bool, retrieval: Optional[dict],
                 probe: Optional[dict], num_classes: Optional[int]) -> dict:
    """The findings of one run as plain numbers (``report.json``).

    Args:
        spearman: rank correlation of output index and eigenvalue estimate (None: unknown).
        eigenfunctions: whether the objective has eigenvalue estimates at all (NeuralEF).
        retrieval: the codes' :func:`retrieval.run_benchmark` results (``retrieval.json``), or None.
        probe: the newest ``eval/probe/<train>--<val>/probe.json`` (``eigenmap probe``), or None.
        num_classes: classes of the evaluation sets, for the chance top-1 (None: from ``probe``).
    """
    if spearman is not None and not np.isfinite(spearman):
        spearman = None  # constant estimates: no order to speak of (and JSON has no NaN)
    out: dict = {"eigenvalue_order": {"spearman": spearman, "eigenfunctions": eigenfunctions,
                                      "ordered_at_or_below": ORDERED_SPEARMAN}}
    out["retrieval"] = _retrieval(retrieval) if retrieval else None
    if probe:
        classes = probe.get("num_classes") or num_classes
        out["classification"] = {
            "num_classes": classes, "chance_top1": 100.0 / classes if classes else None,
            "linear_probe_top1": probe["linear_probe"]["top1"],
            "knn_top1": {name: {int(k): v for k, v in accs.items()} for name, accs in probe["knn"]["top1"].items()}}
    else:
        out["classification"] = None
    return out


def _order_sentence(order: dict) -> str:
    rho = order["spearman"]
    if not order["eigenfunctions"]:
        return ("**Eigenvalue order:** not an eigenfunction objective, so its outputs have no eigenvalue order; a "
                "prefix is an arbitrary choice of m outputs.")
    if rho is None:
        return "**Eigenvalue order:** unknown (no eigenvalue estimates could be read)."
    if rho <= ORDERED_SPEARMAN:
        reading = ("the outputs are ordered by eigenvalue, so the first m outputs are the m strongest eigenfunctions "
                   "the model found, and a prefix keeps them")
    elif rho <= PARTLY_ORDERED_SPEARMAN:
        reading = ("the outputs are only partly ordered (ordered means <= -0.8): a prefix keeps some of the strongest "
                   "eigenfunctions, mixed with weak ones")
    else:
        reading = ("the outputs are not ordered by eigenvalue (ordered means <= -0.8), so the first m outputs are no "
                   "better placed than any m others and a prefix is not a chosen short code")
    return (f"**Eigenvalue order:** Spearman {rho:.3f} between output index and eigenvalue estimate (-1: strictly "
            f"decreasing): {reading}.")


def _fraction(f: float) -> str:
    return "full length" if f == 1 else f"1/{round(1 / f)}"


def _compare(name: str, v: dict, baseline: float) -> str:
    if v["verdict"] == "level":
        return f"level with {name} ({baseline:.3f})"
    where = "ahead of" if v["verdict"] == "ahead" else "behind"
    return f"{where} {name} ({baseline:.3f}) by {abs(v['difference']):.3f} ({abs(v['relative']):.0%})"


def _retrieval_lines(r: dict) -> list[str]:
    R, k = r["R"], r["code_length"]
    chance = r["chance"]
    full = f"**Retrieval:** mAP@{R} of the full {k}-dimensional codes {r['full_length_map']:.3f}"
    full += (f", against {chance['map']:.3f} by chance (the expected mAP@{R} of a random ranking)." if chance else
             " (no chance level recorded).")
    lines = [full, ""]
    compared = [row for row in r["lengths"] if "vs_random_subset" in row]
    if not compared:
        return lines + ["No baselines were run (`eigenmap retrieve` without --no-baselines scores a random m-subset "
                        "of the codes' dimensions and PCA of the codes to m at each length).", ""]
    on = r["baseline_queries"] or "all queries"
    lines.append(f"At each length m, on {on}: the code prefix (its first m dimensions) against a random m-subset "
                 f"of the dimensions (mean of its draws) and PCA of the codes to m, all three scored on those same "
                 f"queries; level = within {LEVEL_RELATIVE:.0%} (for the random subset, or within the standard "
                 "deviation of its draws):")
    lines.append("")
    for row in compared:
        pca = f", {_compare('PCA', row['vs_pca'], row['pca'])}" if "vs_pca" in row else ""
        lines.append(f"- m = {row['dim']} ({_fraction(row['fraction'])}): prefix {row['prefix_on_baseline_queries']:.3f}, "
                     f"{_compare('the random subset', row['vs_random_subset'], row['random_subset'])}{pca}.")
    lines += ["", _summary_sentence(compared, k), ""]
    return lines


def _summary_sentence(compared: list[dict], k: int) -> str:
    short = [row for row in compared if row["dim"] <= k // 4] or compared
    lost = [row["dim"] for row in short if row["vs_random_subset"]["verdict"] == "behind"]
    pca = [row["dim"] for row in short if "vs_pca" in row and row["vs_pca"]["verdict"] == "behind"]
    span = f"m <= {k // 4} (k/4)" if any(row["dim"] <= k // 4 for row in compared) else "every length"
    if lost:
        words = (f"**The prefix is behind the random m-subset at m = {', '.join(map(str, lost))}**: at those lengths "
                 "the first dimensions carry less than a random choice of as many, so this run does not (yet) give "
                 "the ordered short codes the method is for.")
    else:
        words = (f"The prefix is at or above the random m-subset at {span}: the leading outputs are the informative "
                 "ones.")
    if pca:
        words += (f" **PCA of the codes is ahead of the prefix at m = {', '.join(map(str, pca))}**: a rotation "
                  "fitted to these codes on the database packs more into m dimensions than the learned order does. "
                  "What the longer recipe does about it: tools/bench_quality.py trains 15 epochs with NeuralEF's "
                  "alpha ramped linearly from 0.01 to 0.13 over the run (loss.alpha_final), which orders the leading "
                  "outputs further; docs/results.md has its prefixes against PCA at each length.")
    elif any("vs_pca" in row for row in short):
        words += f" PCA of the codes is not ahead of the prefix at {span}."
    return words


# a flat search whose short code is this much slower than the multiply-adds alone would allow is
# bound by costs that do not shrink with m (per-query set-up, the top-R selection, memory traffic)
OVERHEAD_BOUND_SHARE = 0.5


def _speed_lines(r: dict) -> list[str]:
    """What the shortest length buys in speed, and why it is small on a small database."""
    s = r["speed"]
    if s is None:
        return []
    words = (f"**Speed:** at m = {s['dim']} ({_fraction(s['dim'] / r['code_length'])} of the code), {r['backend']} "
             f"answers {s['median']:.2f}x the full length's queries/s (median over the timed rounds, range "
             f"{s['min']:.2f}x-{s['max']:.2f}x; {s['qps_short']:,.0f} against {s['qps_full']:,.0f} q/s), where the "
             f"multiply-adds alone shrink {s['work_ratio']:.0f}x.")
    if s["median"] < OVERHEAD_BOUND_SHARE * s["work_ratio"]:
        words += (f" With {s['database']:,} database rows a search is bound by costs that do not shrink with m "
                  "(per-query set-up, the top-R selection, reading the queries): a short code buys little speed "
                  "at this size. On larger databases it does: the project's docs/benchmarks.md measures exact "
                  "search of 100,000 x 2,048 codes at 11.7x the full length's q/s at 1/16 (128 dimensions), "
                  "close to the 16x of the multiply-adds.")
    return [words, ""]


def _classification_lines(c: dict) -> list[str]:
    chance = c["chance_top1"]
    against = f" (chance {chance:.1f}% for {c['num_classes']} classes)" if chance else ""
    knn = "; ".join(f"kNN-{k} on {name} {v:.1f}%" for name, accs in c["knn_top1"].items()
                    for k, v in sorted(accs.items())[:1])
    times = f", {c['linear_probe_top1'] / chance:.1f} x chance" if chance else ""
    return [f"**Classification:** linear-probe top-1 {c['linear_probe_top1']:.1f}%{against}{times}; {knn}.", ""]


def findings_lines(findings: dict) -> list[str]:
    """The findings section of the report: markdown lines, each figure with its meaning."""
    lines = ["## Findings", "", _order_sentence(findings["eigenvalue_order"]), ""]
    r = findings["retrieval"]
    if r:
        lines += _retrieval_lines(r) + _speed_lines(r)
    else:
        lines += ["Retrieval not run yet (`eigenmap retrieve`).", ""]
    if findings["classification"]:
        lines += _classification_lines(findings["classification"])
    return lines
