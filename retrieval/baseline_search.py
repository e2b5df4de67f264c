"""The baselines searched at the planned lengths: random m-subsets of the dimensions and PCA to m.

They are scored on the plan's queries (every query, or a seeded sample), and the prefix is scored
on the same queries beside them, so each comparison is paired query by query; the spread of a
baseline is its standard deviation over the random draws and the standard error over queries of
its difference with the prefix.

Memory: one baseline index at a time, in memory when it fits the budget (a flat FAISS index on
the CPU searches the filled array itself), else streamed from a lazy view.
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import numpy as np

from .arrays import l2_normalize
from .baselines import fit_pca, pca_view, random_subset, subset_view
from .index import build_index
from .metrics import mean_metrics
from .plan import Plan
from .progress import Progress

logger = logging.getLogger(__name__)

SPREAD = ("random subsets: mean and standard deviation (ddof = 1) over the draws; both baselines: "
          "map_difference_stderr is the standard error over the baseline queries of the per-query AP "
          "difference with the prefix (mean over draws for the random subsets)")


def run_baselines(database, queries: np.ndarray, plan: Plan, options: dict, score, codes_per_query: dict,
                  progress: Progress, seed: int) -> dict[int, dict]:
    """Random subsets and PCA at ``plan.baseline_dims``.

    Args:
        database: ``[n, k]`` codes; queries: ``[nq, k]`` (all of them: the plan picks the sample).
        options: :func:`~retrieval.index.build_index` keyword arguments.
        score: ``(D, I) -> per-query metrics`` of the baseline queries.
        codes_per_query: length -> the prefix's per-query metrics over all queries.

    Returns:
        length -> ``{"random_subset", "pca", "codes_on_baseline_queries"}``.
    """
    if not plan.baseline_dims:
        return {}
    ids = plan.baseline_query_ids
    q = queries if ids is None else np.asarray(queries)[ids]
    pca = None
    if plan.pca:
        t0 = time.perf_counter()
        pca = fit_pca(database, max_rows=plan.pca_fit_rows, seed=seed)
        progress.update(plan.fit_units(), "baselines: PCA fitted on %d rows in %.1f s"
                        % (pca.fit_rows, time.perf_counter() - t0))
    out = {}
    for m in plan.baseline_dims:
        codes = {key: value if ids is None else value[ids] for key, value in codes_per_query[m].items()}
        draws = _random_draws(database, q, m, plan, options, score, codes, progress, seed)
        out[m] = {"random_subset": _spread(draws, codes), "pca": None, "codes_on_baseline_queries": mean_metrics(codes)}
        if pca is not None:
            t0 = time.perf_counter()
            index = build_index(pca_view(database, pca, m), **options)
            pca_scores = score(*index.search(pca_view(q, pca, m)[0 : len(q)], plan.R))
            del index
            out[m]["pca"] = {**mean_metrics(pca_scores), **_paired([pca_scores], codes)}
            progress.update(plan.pca_units(m), "baselines, length %d: PCA mAP@%d %.4f in %.1f s (prefix %.4f, random "
                            "%.4f on the same queries)" % (m, plan.R, out[m]["pca"]["map"], time.perf_counter() - t0,
                                                            out[m]["codes_on_baseline_queries"]["map"],
                                                            out[m]["random_subset"]["map_mean"]))
    return out


def _random_draws(database, q, m, plan, options, score, codes, progress, seed) -> list[dict]:
    """Per-query metrics of each random draw at length ``m``, one index at a time."""
    if m == plan.k:  # every k-subset is the whole code, re-ordered: the cosine is the codes' own
        progress.update(0.0, f"baselines, length {m}: every random {m}-subset is the code itself")
        return [codes] * plan.random_draws
    draws = []
    for draw in range(plan.random_draws):
        t0 = time.perf_counter()
        columns = random_subset(plan.k, m, draw, seed)
        index = build_index(subset_view(database, columns), **options)  # in memory if it fits, else streamed
        draws.append(score(*index.search(l2_normalize(q[:, columns]), plan.R)))
        del index
        progress.update(plan.draw_units(m), "baselines, length %d: random subset %d of %d, mAP@%d %.4f in %.1f s"
                        % (m, draw + 1, plan.random_draws, plan.R, float(draws[-1]["ap"].mean()),
                           time.perf_counter() - t0))
    return draws


def _paired(per_query: list[dict], codes: dict) -> dict:
    """Standard error over queries of (mean AP over ``per_query``) - (the prefix's AP)."""
    difference = np.mean([p["ap"] for p in per_query], axis=0) - codes["ap"]
    stderr = float(np.std(difference, ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else 0.0
    return {"map_difference_stderr": stderr}


def _spread(per_query: list[dict], codes: dict) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one draw) of each figure over draws."""
    figures = [mean_metrics(p) for p in per_query]
    out = {}
    for key in ("map", "precision", "recall"):
        values = [f[key] for f in figures]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["draws"] = figures
    out.update(_paired(per_query, codes))
    return out
