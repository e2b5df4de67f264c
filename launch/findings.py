"""What a run's figures say, in words and as numbers: the opening of every run report.

:func:`run_findings` reads the figures the other commands left (the eigenvalue estimates, the
retrieval results of ``eigenmap retrieve``, the probe's of ``eigenmap probe``) and returns one
machine-readable dict (written to ``RUN/report/report.json``); :func:`findings_lines` puts the
same dict into sentences. Nothing is judged from memory: each sentence names its figures.

Verdicts compare the code prefix of length m with the baselines at m: **level** when the
difference is at most :data:`LEVEL_RELATIVE` of the baseline's mAP or, for the random m-subset,
at most the standard deviation of its draws (a gap smaller than the baseline's own draw-to-draw
spread is not a finding); else **ahead** or **behind**.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["LEVEL_RELATIVE", "ORDERED_SPEARMAN", "run_findings", "findings_lines", "verdict", "class_prior_map"]

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


def class_prior_map(query_labels: np.ndarray, database_labels: np.ndarray) -> float:
    """mAP@R of a random ranking for single-label sets: the share of the database in the query's
    class, averaged over the queries (the class prior)."""
    db_classes, db_counts = np.unique(np.asarray(database_labels), return_counts=True)
    share = dict(zip(db_classes.tolist(), (db_counts / db_counts.sum()).tolist()))
    return float(np.mean([share.get(c, 0.0) for c in np.asarray(query_labels).tolist()]))


def _chance_map(results: dict) -> Optional[dict]:
    """The retrieval results' chance level, or (results written before they recorded one) the
    class prior from the labels saved beside the arrays they were computed on."""
    if isinstance(results.get("chance"), dict):
        return results["chance"]
    inputs = results.get("inputs") or {}
    if results.get("labels", {}).get("kind") != "single" or not inputs.get("database") or not inputs.get("queries"):
        return None
    # an input is its folder's path, or (retrieve's record) a dict naming it
    paths = [Path(inputs[role]["path"] if isinstance(inputs[role], dict) else inputs[role]) / "labels.npy"
             for role in ("queries", "database")]
    if not all(p.is_file() for p in paths):
        return None
    return {"map": class_prior_map(np.load(paths[0]), np.load(paths[1])),
            "definition": "mAP@R of a random ranking: the share of the database in the query's class, averaged over "
                          "the queries (the class prior; computed by the report from the saved labels)"}


def _speedup(results: dict) -> Optional[dict]:
    """Speed-up at 1/16 of the code length over the full length: median and range over the
    timed rounds (each round times every length, so a round's ratio compares like with like)."""
    top = results.get("speedup_at_1_16")
    if isinstance(top, dict):
        return {"median": top["median"], "min": top["min"], "max": top["max"], "source": "retrieval results"}
    k = results.get("sizes", {}).get("code_length")
    recs = {r["dim"]: r for r in results.get("lengths", [])}
    if not k or k % 16 or k // 16 not in recs or k not in recs:
        return None
    short, full = recs[k // 16], recs[k]
    if "speedup_median" in short and "speedup_range" in short:
        low, high = short["speedup_range"]
        return {"median": short["speedup_median"], "min": low, "max": high, "source": "retrieval results"}
    rounds = [f / s for f, s in zip(full.get("seconds", []), short.get("seconds", [])) if s > 0]
    if not rounds:
        return None
    return {"median": statistics.median(rounds), "min": min(rounds), "max": max(rounds),
            "source": "the report, from each timed round's seconds"}


def _retrieval(results: dict) -> dict:
    k, R = results["sizes"]["code_length"], results["R"]
    lengths = []
    for rec in results["lengths"]:
        row = {"dim": rec["dim"], "fraction": rec["dim"] / k, "prefix": rec["codes"]["map"]}
        if rec.get("random_subset") is not None:
            rs = rec["random_subset"]
            row.update(random_subset=rs["map_mean"], random_subset_std=rs["map_std"], pca=rec["pca"]["map"])
            if rec["dim"] < k:  # at the full length every baseline is the code itself, re-ordered or rotated
                row.update(vs_random_subset=verdict(row["prefix"], rs["map_mean"], rs["map_std"]),
                           vs_pca=verdict(row["prefix"], rec["pca"]["map"]))
        lengths.append(row)
    return {"R": R, "code_length": k, "full_length_map": results["lengths"][-1]["codes"]["map"],
            "chance": _chance_map(results), "lengths": lengths, "speedup_at_1_16": _speedup(results),
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
    lines.append(f"At each length m, the code prefix (its first m dimensions) against a random m-subset of the "
                 f"dimensions (mean of its draws) and PCA of the codes to m; level = within {LEVEL_RELATIVE:.0%} "
                 "(for the random subset, or within the standard deviation of its draws):")
    lines.append("")
    for row in compared:
        lines.append(f"- m = {row['dim']} ({_fraction(row['fraction'])}): prefix {row['prefix']:.3f}, "
                     f"{_compare('the random subset', row['vs_random_subset'], row['random_subset'])}, "
                     f"{_compare('PCA', row['vs_pca'], row['pca'])}.")
    lines += ["", _summary_sentence(compared, k), ""]
    return lines


def _summary_sentence(compared: list[dict], k: int) -> str:
    short = [row for row in compared if row["dim"] <= k // 4] or compared
    lost = [row["dim"] for row in short if row["vs_random_subset"]["verdict"] == "behind"]
    pca = [row["dim"] for row in short if row["vs_pca"]["verdict"] == "behind"]
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
    else:
        words += f" PCA of the codes is not ahead of the prefix at {span}."
    return words


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
        lines += _retrieval_lines(r)
        s = r["speedup_at_1_16"]
        if s:
            lines += [f"**Speed at 1/16 of the code length** ({r['code_length'] // 16} of {r['code_length']} "
                      f"dimensions, {r['backend']}): {s['median']:.2f}x the full length's queries/s, the median over "
                      f"the timed rounds (range {s['min']:.2f}x-{s['max']:.2f}x).", ""]
    else:
        lines += ["Retrieval not run yet (`eigenmap retrieve`).", ""]
    if findings["classification"]:
        lines += _classification_lines(findings["classification"])
    return lines
