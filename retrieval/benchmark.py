"""Quality and speed of retrieval against code length: the one entry the command line calls."""

from __future__ import annotations

import logging
import statistics
import time

import faiss
import numpy as np

from .arrays import l2_normalize, rows_for_budget
from .backend import resolve_backend
from .baselines import DEFAULT_PCA_FIT_ROWS, fit_pca, pca_view, random_subset, subset_view
from .checks import check_codes, check_non_negative_int, check_positive_int, check_R, check_same_width
from .funnel import Funnel, check_funnel_settings
from .index import build_index
from .metrics import mean_metrics, per_query_metrics, prepare_labels, relevant_counts
from .prefix import prefix_codes, prefix_view, resolve_lengths
from .timing import time_interleaved

logger = logging.getLogger(__name__)

TIMING_METHOD = (
    "queries/s = number of queries / wall seconds of one search of all queries in one batch "
    "(query prefix and normalisation included; the database prefix, normalisation and index are "
    "built once per length, untimed, as a deployed index would be); best of the timed rounds after "
    "a warm-up round, rounds interleaved across lengths when all indexes fit the memory budget"
)


def run_benchmark(
    database,
    database_labels,
    queries,
    query_labels,
    *,
    dims=None,
    R: int = 100,
    index: str = "flat",
    backend: str = "auto",
    device: str | None = None,
    baselines: bool = True,
    random_draws: int = 5,
    pca_fit_rows: int | None = DEFAULT_PCA_FIT_ROWS,
    funnel: bool = True,
    funnel_short_dim: int | None = None,
    funnel_rerank_dim: int | None = None,
    funnel_shortlist_size: int | None = None,
    repeats: int = 3,
    busy_retries: int = 0,
    quiet_wait_seconds: float = 0.0,
    seed: int = 0,
    memory_budget_bytes: int | None = None,
    name: str = "codes",
    index_options: dict | None = None,
) -> dict:
    """Retrieval quality (mAP@R, precision@R, recall@R) and speed (queries/s) at each code length.

    The same on codes or on any float features (``name`` says which): a length m is the first m
    dimensions, L2-normalised; similarity is the cosine.

    Args:
        database: ``[n, k]`` float array (np.ndarray or np.memmap; read by row chunks).
        database_labels: ``[n]`` labels, ``[n, C]`` multi-hot, or a list of label lists.
        queries: ``[nq, k]`` float array.
        query_labels: like ``database_labels``, ``nq`` entries.
        dims: code lengths (default: powers of two up to k, and k).
        R: neighbours per query and metric cut-off (default 100).
        index: "flat" (exact), "ivf" or "hnsw".
        backend, device: see :func:`retrieval.backend.resolve_backend`.
        baselines: also score random m-subsets of dimensions and PCA to m.
        random_draws: seeded random subsets per length.
        pca_fit_rows: rows the PCA is fitted on (seeded sample; None: all).
        funnel: also run the adaptive funnel (shortlist then rerank).
        funnel_short_dim, funnel_rerank_dim, funnel_shortlist_size: funnel settings (defaults:
            k // 16, k, 2 R).
        repeats: timed rounds (after one warm-up round).
        busy_retries: a timed search during which other processes took over 10% of the CPU is
            repeated up to this many times, keeping the fastest (for shared machines).
        quiet_wait_seconds: before each timed search, wait up to this long for other processes
            to leave the CPU (for shared machines; 0: no wait).
        seed: seed of the random subsets, PCA sample and IVF training.
        memory_budget_bytes: database bytes held at once (default 4 GiB).
        name: what the arrays are ("codes", "features"), for the report.
        index_options: more :func:`~retrieval.index.build_index` options (nlist, nprobe, ...).

    Returns:
        A JSON-serialisable dict:

        - ``name``, ``R``, ``dims``, ``seed``, ``memory_budget_bytes``;
        - ``sizes``: ``database``, ``queries``, ``code_length``, ``database_dtype``;
        - ``search``: ``backend``, ``device``, ``index_kind``, ``index`` (FAISS class or torch),
          parameters, ``threads`` -- of the reference (longest) length's index;
        - ``timing``: ``method``, ``repeats``, ``busy_retries``, ``quiet_wait_seconds``,
          ``interleaved``;
        - ``labels``: ``kind`` ("single"/"multi"), ``queries_without_relevant``;
        - ``lengths``: one dict per length: ``dim``, ``codes`` (``map``, ``precision``,
          ``recall``), ``qps``, ``qps_median``, ``speedup`` (q/s over the reference length's),
          ``seconds``, ``background_cpu``, ``tries`` (per round), ``build_seconds``, ``index``
          (its info); with baselines
          ``random_subset`` (``map_mean``, ``map_std``, ``precision_mean``, ``precision_std``,
          ``recall_mean``, ``recall_std``, ``draws``) and ``pca`` (``map``, ``precision``,
          ``recall``);
        - ``reference_dim``: the length speed-ups are relative to (the longest);
        - ``speedup_at_1_16``: speed-up at k/16 (None if k/16 is not among the lengths);
        - ``funnel``: None or ``short_dim``, ``rerank_dim``, ``shortlist_size``,
          ``rerank_device``, ``shortlist`` (index info), ``map``, ``precision``, ``recall``,
          ``full_length_map``, ``map_delta_points`` (100 x (funnel - full-length mAP)), ``qps``,
          ``qps_median``, ``speedup``, ``shortlist_seconds``, ``rerank_seconds`` (of the fastest
          timed call), ``seconds``, ``background_cpu``, ``tries``;
        - ``baselines``: None or ``random_draws``, ``pca_fit_rows``.
    """
    check_codes(database, "database")
    check_codes(queries, "queries")
    k = check_same_width(queries, database)
    n, nq = int(database.shape[0]), int(queries.shape[0])
    R = check_R(R, n)
    lengths = resolve_lengths(dims, k)
    repeats = check_positive_int(repeats, "repeats")
    random_draws = check_positive_int(random_draws, "random_draws")
    if funnel:
        funnel_short_dim, funnel_rerank_dim, funnel_shortlist_size = check_funnel_settings(
            k, funnel_short_dim, funnel_rerank_dim, funnel_shortlist_size)
    if not quiet_wait_seconds >= 0:
        raise ValueError(f"quiet_wait_seconds must be >= 0 (seconds); got {quiet_wait_seconds!r}")
    timing = {"repeats": repeats, "busy_retries": check_non_negative_int(busy_retries, "busy_retries"),
              "quiet_wait_seconds": float(quiet_wait_seconds)}
    query_set, database_set = prepare_labels(query_labels, database_labels, nq, n)
    budget = rows_for_budget(memory_budget_bytes, 1)
    chosen = resolve_backend(backend, device)
    options = {"index": index, "backend": chosen, "memory_budget_bytes": budget, "seed": seed, **(index_options or {})}
    queries = np.asarray(queries)
    relevant = relevant_counts(query_set, database_set)
    if (relevant == 0).any():  # once here, not at every one of the many scorings below
        logger.warning("%d of %d queries have no relevant item in the database; they score 0",
                       int((relevant == 0).sum()), nq)

    def score(D, I):
        return mean_metrics(per_query_metrics(I, query_set, database_set, D=D, R=R, database_relevant=relevant))

    records, funnel_record, interleaved = _measure(database, queries, lengths, R, options, score, timing, budget,
                                                   funnel, funnel_short_dim, funnel_rerank_dim, funnel_shortlist_size)
    reference = records[-1]
    for rec in records:
        rec["speedup"] = rec["qps"] / reference["qps"]
    if funnel_record is not None:
        funnel_record["speedup"] = funnel_record["qps"] / reference["qps"]
        funnel_record["full_length_map"] = reference["codes"]["map"]
        funnel_record["map_delta_points"] = 100 * (funnel_record["map"] - reference["codes"]["map"])
    if baselines:
        _add_baselines(records, database, queries, k, R, options, score, random_draws, seed, pca_fit_rows, budget)
    sixteenth = next((rec for rec in records if k % 16 == 0 and rec["dim"] == k // 16), None)
    return {
        "name": name,
        "R": R,
        "dims": lengths,
        "seed": seed,
        "memory_budget_bytes": budget,
        "sizes": {"database": n, "queries": nq, "code_length": k, "database_dtype": str(np.dtype(database.dtype))},
        "search": {**reference["index"], "threads": _threads(chosen.name)},
        "timing": {"method": TIMING_METHOD, **timing, "interleaved": interleaved},
        "labels": {"kind": query_set.kind, "queries_without_relevant": int((relevant == 0).sum())},
        "lengths": records,
        "reference_dim": reference["dim"],
        "speedup_at_1_16": None if sixteenth is None else sixteenth["speedup"],
        "funnel": funnel_record,
        "baselines": {"random_draws": random_draws, "pca_fit_rows": pca_fit_rows} if baselines else None,
    }


def _measure(database, queries, lengths, R, options, score, timing, budget,
             funnel, short_dim, rerank_dim, shortlist_size):
    """Build each length's index, time its searches, score its results; the funnel likewise.

    ``timing`` holds :func:`~retrieval.timing.time_interleaved`'s keyword arguments.
    """
    n, k = database.shape
    interleaved = sum(n * m * 4 for m in lengths) <= budget
    records, indexes, results, runs, timings = [], {}, {}, {}, {}
    for m in lengths:
        t0 = time.perf_counter()
        indexes[m] = build_index(prefix_view(database, m), **options)
        records.append({"dim": m, "build_seconds": time.perf_counter() - t0, "index": indexes[m].info()})

        def run(m=m):
            results[m] = indexes[m].search(prefix_codes(queries, m), R)

        runs[f"prefix {m}"] = run
        if not interleaved:  # time now and free this length's index (the funnel's shortlist one stays)
            timings.update(time_interleaved({f"prefix {m}": run}, **timing))
            del runs[f"prefix {m}"]
            if not (funnel and m == short_dim):
                del indexes[m]
    funnel_obj = None
    if funnel:
        reference = indexes.get(rerank_dim)
        funnel_obj = Funnel(database, short_dim=short_dim, rerank_dim=rerank_dim, shortlist_size=shortlist_size,
                            shortlist_index=indexes.get(short_dim),
                            rerank_database=None if reference is None else reference.stored_rows(), **options)
        splits = []

        def run_funnel():
            results["funnel"] = funnel_obj.search(queries, R)
            splits.append(funnel_obj.last_seconds)

        runs["funnel"] = run_funnel
    timings.update(time_interleaved(runs, **timing) if runs else {})
    for rec in records:
        _finish(rec, timings[f"prefix {rec['dim']}"], len(queries))
        rec["codes"] = score(*results[rec["dim"]])
    funnel_record = None
    if funnel_obj is not None:
        fastest = min(splits[1:], key=lambda split: sum(split.values()))  # splits[0]: the warm-up call
        funnel_record = {**funnel_obj.info(R), **score(*results["funnel"]),
                         "shortlist_seconds": fastest["shortlist"], "rerank_seconds": fastest["rerank"]}
        _finish(funnel_record, timings["funnel"], len(queries))
    return records, funnel_record, interleaved


def _threads(backend_name: str) -> int:
    """CPU threads the search engine may use."""
    if backend_name == "torch":
        import torch

        return torch.get_num_threads()
    return faiss.omp_get_max_threads()


def _finish(record: dict, timing: dict, nq: int) -> None:
    record.update(qps=nq / timing["best_seconds"], qps_median=nq / timing["median_seconds"],
                  seconds=timing["seconds"], background_cpu=timing["background_cpu"], tries=timing["tries"])


def _add_baselines(records, database, queries, k, R, options, score, draws, seed, pca_fit_rows, budget):
    """Random m-subsets (``draws`` seeded draws) and PCA to m, searched like the prefixes."""
    pca = fit_pca(database, max_rows=pca_fit_rows, seed=seed, memory_budget_bytes=budget)
    for rec in records:
        m = rec["dim"]
        if m == k:  # every k-subset is the whole code, re-ordered: the cosine is the codes' own
            figures = [rec["codes"]] * draws
        else:
            figures = []
            for draw in range(draws):
                columns = random_subset(k, m, draw, seed)
                index = build_index(subset_view(database, columns), **options)
                figures.append(score(*index.search(l2_normalize(queries[:, columns]), R)))
        rec["random_subset"] = _spread(figures)
        index = build_index(pca_view(database, pca, m), **options)
        rec["pca"] = score(*index.search(pca_view(queries, pca, m)[0 : len(queries)], R))
        logger.info("length %d: codes mAP %.4f, random %.4f, PCA %.4f", m, rec["codes"]["map"],
                    rec["random_subset"]["map_mean"], rec["pca"]["map"])


def _spread(figures: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one draw) of each figure over draws."""
    out = {}
    for key in ("map", "precision", "recall"):
        values = [f[key] for f in figures]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["draws"] = figures
    return out
