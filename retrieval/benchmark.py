"""Quality and speed of retrieval against code length: the one entry the command line calls."""

from __future__ import annotations

import logging
import statistics
import time

import faiss
import numpy as np

from .backend import resolve_backend
from .baseline_search import SPREAD, run_baselines
from .checks import check_codes, check_R, check_same_width
from .funnel import check_funnel_settings
from .index import build_index
from .metrics import Labels, mean_metrics, per_query_metrics, prepare_labels, random_ranking_map, relevant_counts
from .plan import make_plan, probe_rate
from .prefix import resolve_lengths
from .progress import Progress
from .settings import BaselineSettings, FunnelSettings, SearchSettings, TimingSettings, settings_dict
from .sweep import Measured, run_sweep

logger = logging.getLogger(__name__)

TIMING_METHOD = (
    "queries/s = number of timed queries / wall seconds of one search of them in one batch (the timed "
    "queries: every query, or a seeded sample of them, as timing.queries says; each timed measurement "
    "repeats the search back to back for at least timing.min_seconds and divides by the searches made, "
    "so a millisecond search is not measured against the scheduler's noise; quality is scored on every "
    "query; query prefix and normalisation included; the database prefix, normalisation and index are "
    "built untimed, as a deployed index would be); one warm-up round, then the timed rounds, each "
    "searching every length in turn (the funnel last); q/s is the best round, qps_median the median; "
    "speedup = q/s over the reference length's q/s; speedup_median and speedup_range are over the "
    "rounds of the per-round ratio (the reference length's seconds in that round over the length's), "
    "so each is paired with the reference searched in the same round"
)

CHANCE_DEFINITION = (
    "the expected mAP@R of a uniformly random ranking, computed exactly from each query's number of "
    "relevant database items (the hits in a random top R are hypergeometric, their ranks uniform); "
    "AP@R divides by the hits inside the top R, so when few items are relevant it sits above the class "
    "prior (class_prior: for each query the fraction of the database relevant to it, averaged), about "
    "the prior times 1 + 1/2 + ... + 1/R"
)


def run_benchmark(
    database,
    database_labels,
    queries,
    query_labels,
    *,
    dims=None,
    R: int = 100,
    search: SearchSettings = SearchSettings(),
    timing: TimingSettings = TimingSettings(),
    funnel: FunnelSettings | None = FunnelSettings(),
    baselines: BaselineSettings | None = BaselineSettings(),
    seed: int = 0,
    name: str = "codes",
) -> dict:
    """Retrieval quality (mAP@R, precision@R, recall@R) and speed (queries/s) at each code length.

    The same on codes or on any float features (``name`` says which): a length m is the first m
    dimensions, L2-normalised; similarity is the cosine. Before the work starts the plan is
    logged (lengths, memory, baselines, funnel, estimated time, :mod:`retrieval.plan`); each
    finished unit of work is logged with the elapsed time and an estimate of the time left.

    Memory: peak anonymous memory stays within ``search.memory_budget_bytes`` plus a fixed
    overhead: the libraries, about three copies of the queries, a few 64 MiB working chunks, the
    PCA's k x k matrices (0.1 GiB at k = 2,048) and FAISS's search blocks.

    Args:
        database: ``[n, k]`` float array (np.ndarray or np.memmap; read by row chunks).
        database_labels: ``[n]`` labels, ``[n, C]`` multi-hot, or a list of label lists.
        queries: ``[nq, k]`` float array.
        query_labels: like ``database_labels``, ``nq`` entries.
        dims: code lengths (default :func:`~retrieval.prefix.default_lengths`: powers of two from 4
            up to k, and k).
        R: neighbours per query and metric cut-off (default 100).
        search: index, backend, device, memory budget, index options (:class:`SearchSettings`).
        timing: timed rounds and the shared-machine guards (:class:`TimingSettings`).
        funnel: the adaptive funnel's settings (:class:`FunnelSettings`); None: no funnel.
        baselines: random subsets and PCA (:class:`BaselineSettings`); None: no baselines.
        seed: seed of the random subsets, the baseline and timing query samples, the PCA sample and
            IVF training.
        name: what the arrays are ("codes", "features"), for the report.

    Returns:
        A JSON-serialisable dict:

        - ``name``, ``R``, ``dims``, ``seed``, ``memory_budget_bytes``, ``settings`` (each group);
        - ``sizes``: ``database``, ``queries``, ``code_length``, ``database_dtype``;
        - ``search``: ``backend``, ``device``, ``index_kind``, ``index`` (FAISS class or torch),
          parameters, ``threads`` -- of the reference (longest) length's index;
        - ``timing``: ``method``, ``repeats``, ``busy_retries``, ``quiet_wait_seconds``, ``queries``
          (searched in each timed round) and ``query_sample`` (which, in words),
          ``interleaved`` (every index held; else rebuilt in every round, rounds still
          interleaved), ``rounds`` (in words), ``background_cpu`` (``median``, ``max`` over the
          timed searches of the CPU share other processes took, or None);
        - ``labels``: ``kind`` ("single"/"multi"), ``queries_without_relevant``;
        - ``chance``: ``map`` (a random ranking's expected mAP@R), ``class_prior`` and the ``definition``;
        - ``lengths``: one dict per length: ``dim``, ``codes`` (``map``, ``precision``,
          ``recall``), ``qps``, ``qps_median``, ``speedup``, ``speedup_median``,
          ``speedup_range`` ([min, max]), ``seconds``, ``background_cpu``, ``tries`` (per
          round), ``build_seconds``, ``index`` (its info); ``random_subset`` (``map_mean``,
          ``map_std``, ``precision_mean``, ``precision_std``, ``recall_mean``, ``recall_std``,
          ``draws``, ``map_difference_stderr``), ``pca`` (``map``, ``precision``, ``recall``,
          ``map_difference_stderr``) and ``codes_on_baseline_queries`` (the prefix's figures on
          the baselines' queries), each None at a length without baselines;
        - ``reference_dim``: the length speed-ups are relative to (the longest);
        - ``speedup_at_1_16``: ``median``, ``min``, ``max`` of the per-round speed-up at k/16
          (None if k/16 is not among the lengths);
        - ``funnel``: None or ``short_dim``, ``rerank_dim``, ``shortlist_size``,
          ``rerank_device``, ``shortlist`` (index info), ``map``, ``precision``, ``recall``,
          ``full_length_map``, ``map_delta_points`` (100 x (funnel - full-length mAP)), ``qps``,
          ``qps_median``, ``speedup``, ``speedup_median``, ``speedup_range``,
          ``shortlist_seconds``, ``rerank_seconds`` (of the fastest timed call), ``seconds``,
          ``background_cpu``, ``tries``;
        - ``baselines``: None or ``random_draws``, ``pca`` (bool), ``pca_fit_rows``, ``dims``, ``queries``,
          ``query_sample`` and ``choice`` (in words), ``spread`` (its definition);
        - ``plan``: the planned work (:meth:`~retrieval.plan.Plan.as_dict`) and
          ``wall_seconds`` (``probe``, ``sweep``, ``baselines``, ``total``).
    """
    for value, kind, optional in ((search, SearchSettings, False), (timing, TimingSettings, False),
                                  (funnel, FunnelSettings, True), (baselines, BaselineSettings, True)):
        if not (isinstance(value, kind) or (optional and value is None)):
            raise ValueError(f"expected a retrieval.{kind.__name__}{' or None' if optional else ''}; got {value!r}")
    started = time.perf_counter()
    check_codes(database, "database")
    check_codes(queries, "queries")
    k = check_same_width(queries, database)
    n, nq = int(database.shape[0]), int(queries.shape[0])
    R = check_R(R, n)
    lengths = resolve_lengths(dims, k)
    funnel_dims = None if funnel is None else check_funnel_settings(k, funnel.short_dim, funnel.rerank_dim,
                                                                    funnel.shortlist_size)
    query_set, database_set = prepare_labels(query_labels, database_labels, nq, n)
    chosen = resolve_backend(search.backend, search.device)
    options = {"index": search.index, "backend": chosen, "memory_budget_bytes": search.memory_budget_bytes,
               "seed": seed, **search.index_options}
    queries = np.asarray(queries)
    relevant = relevant_counts(query_set, database_set)
    if (relevant == 0).any():  # once here, not at every one of the many scorings below
        logger.warning("%d of %d queries have no relevant item in the database; they score 0",
                       int((relevant == 0).sum()), nq)
    plan = make_plan(n=n, nq=nq, k=k, R=R, lengths=lengths, kind=search.index, options=dict(search.index_options),
                     budget=search.memory_budget_bytes, repeats=timing.repeats, funnel=funnel_dims,
                     baselines=baselines, seed=seed, timing_sample=timing.query_sample)
    plan.min_timed_seconds = timing.min_seconds
    plan.seconds_per_unit = probe_rate(database, queries, lambda rows: build_index(rows, **{**options, "index": "flat"}),
                                       k)
    for line in plan.describe().splitlines():  # one record per line: each carries the log's prefix
        logger.info("%s", line)
    progress = Progress(plan.total_units(), "retrieval", every_seconds=0, terminal=False, logger=logger,
                        seconds_per_unit=plan.seconds_per_unit, counted=False, watch=False)
    probed = time.perf_counter()

    def score(D, I):
        return per_query_metrics(I, query_set, database_set, D=D, R=R, database_relevant=relevant)

    measured, funnel_measured = run_sweep(database, queries, plan, options, timing, score, progress)
    swept = time.perf_counter()
    ids = plan.baseline_query_ids
    sample = query_set if ids is None else Labels(query_set.kind, query_set.values[ids])

    def score_sample(D, I):
        return per_query_metrics(I, sample, database_set, D=D, R=R,
                                 database_relevant=relevant if ids is None else relevant[ids])

    compared = run_baselines(database, queries, plan, options, score_sample,
                             {m: measured[m].per_query for m in plan.baseline_dims}, progress, seed) if baselines else {}
    finished = time.perf_counter()
    reference = measured[lengths[-1]]
    timed = plan.timing_queries
    records = [_length_record(m, measured[m], reference, compared.get(m), timed) for m in lengths]
    sixteenth = next((rec for rec in records if k % 16 == 0 and rec["dim"] == k // 16), None)
    background = [b for rec in records for b in rec["background_cpu"] if b is not None]
    plan_record = plan.as_dict()
    plan_record["wall_seconds"] = {"probe": probed - started, "sweep": swept - probed, "baselines": finished - swept,
                                   "total": finished - started}
    logger.info("retrieval done in %.1f s (sweep %.1f s, baselines %.1f s)", finished - started, swept - probed,
                finished - swept)
    return {
        "name": name,
        "R": R,
        "dims": lengths,
        "seed": seed,
        "memory_budget_bytes": search.memory_budget_bytes,
        "settings": {"search": settings_dict(search), "timing": settings_dict(timing),
                     "funnel": settings_dict(funnel), "baselines": settings_dict(baselines)},
        "sizes": {"database": n, "queries": nq, "code_length": k, "database_dtype": str(np.dtype(database.dtype))},
        "search": {**reference.info, "threads": _threads(chosen.name)},
        "timing": {"method": TIMING_METHOD, **timing.as_dict(), "queries": timed,
                   "query_sample": ("all queries" if plan.timing_query_ids is None else
                                    f"a seeded sample of {timed} of the {nq} queries (seed {seed})"),
                   "interleaved": plan.held,
                   "rounds": ("every length's index held; each round searches every length in turn" if plan.held else
                              "each length rebuilt before its search and freed after it, in every round (the "
                              "indexes do not fit the memory budget together); each round searches every "
                              "length in turn"),
                   "background_cpu": {"median": statistics.median(background), "max": max(background)}
                   if background else None},
        "labels": {"kind": query_set.kind, "queries_without_relevant": int((relevant == 0).sum())},
        "chance": {"map": random_ranking_map(relevant, n, R), "class_prior": float(np.mean(relevant / n)),
                   "definition": CHANCE_DEFINITION},
        "lengths": records,
        "reference_dim": lengths[-1],
        "speedup_at_1_16": None if sixteenth is None else {
            "median": sixteenth["speedup_median"], "min": sixteenth["speedup_range"][0],
            "max": sixteenth["speedup_range"][1]},
        "funnel": None if funnel_measured is None else _funnel_record(funnel_measured, reference, records[-1], timed),
        "baselines": None if baselines is None else {
            "random_draws": plan.random_draws, "pca": plan.pca, "pca_fit_rows": plan.pca_fit_rows,
            "dims": plan.baseline_dims,
            "queries": plan.baseline_queries,
            "query_sample": ("all queries" if ids is None else
                             f"a seeded sample of {len(ids)} of the {nq} queries (seed {seed})"),
            "choice": plan.baseline_choice, "spread": SPREAD},
        "plan": plan_record,
    }


def _speed(timing: dict, reference: dict, nq: int) -> dict:
    """q/s (``nq``: queries of each timed search) and speed-ups of one timed run against the
    reference length's run of the same rounds."""
    ratios = [ref / own for ref, own in zip(reference["seconds"], timing["seconds"])]
    return {"qps": nq / timing["best_seconds"], "qps_median": nq / timing["median_seconds"],
            "speedup": reference["best_seconds"] / timing["best_seconds"],
            "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
            "seconds": timing["seconds"], "background_cpu": timing["background_cpu"], "tries": timing["tries"]}


def _length_record(m: int, measured: Measured, reference: Measured, compared: dict | None, nq: int) -> dict:
    """The one place a length's record is assembled."""
    compared = compared or {}
    return {"dim": m, "codes": mean_metrics(measured.per_query), **_speed(measured.timing, reference.timing, nq),
            "build_seconds": measured.build_seconds, "index": measured.info,
            "random_subset": compared.get("random_subset"), "pca": compared.get("pca"),
            "codes_on_baseline_queries": compared.get("codes_on_baseline_queries")}


def _funnel_record(measured: Measured, reference: Measured, full_length: dict, nq: int) -> dict:
    figures = mean_metrics(measured.per_query)
    return {**measured.info, **figures, "full_length_map": full_length["codes"]["map"],
            "map_delta_points": 100 * (figures["map"] - full_length["codes"]["map"]),
            **_speed(measured.timing, reference.timing, nq),
            "shortlist_seconds": measured.split["shortlist"], "rerank_seconds": measured.split["rerank"],
            "build_seconds": measured.build_seconds}


def _threads(backend_name: str) -> int:
    """CPU threads the search engine may use."""
    if backend_name == "torch":
        import torch

        return torch.get_num_threads()
    return faiss.omp_get_max_threads()
