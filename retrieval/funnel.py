"""The adaptive funnel (MRL's adaptive retrieval): shortlist with a short prefix, rerank with a
longer one.

1. shortlist: exact search over the whole database with the first ``short_dim`` dimensions
   (default 1/16 of the code), keeping ``shortlist_size`` candidates;
2. rerank: cosine similarity of those candidates with the first ``rerank_dim`` dimensions
   (default the full length); the top R of the rerank is the answer.

The default shortlist is 2 R. On the CPU the rerank reads ``shortlist_size`` full-length rows per
query from memory (200 x 8 KiB at R = 100, k = 2,048), a memory-bound cost that grows with the
shortlist while the quality saturates early; tools/bench_retrieval.py measures the default
(``funnel`` in docs/results/cpu_bench_retrieval.json) and ``--shortlist N`` others. On a GPU the
rerank is cheap and a longer shortlist costs little: set it per dataset.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from .arrays import as_float32_rows, rows_for_budget, sort_neighbours, take_rows
from .checks import check_dims, check_positive_int, check_R
from .index import SearchIndex, build_index
from .prefix import prefix_codes, prefix_view

logger = logging.getLogger(__name__)

DEFAULT_SHORTLIST_FACTOR = 2


def default_short_dim(code_length: int) -> int:
    """1/16 of the code length (at least 1): the cut the retrieval claim is about."""
    return max(1, code_length // 16)


def check_funnel_settings(code_length: int, short_dim: int | None, rerank_dim: int | None,
                          shortlist_size: int | None) -> tuple[int, int, int | None]:
    """``(short_dim, rerank_dim, shortlist_size)`` with defaults filled in (shortlist_size stays
    None: 2 R at search time), after checking ``1 <= short_dim < rerank_dim <= code_length``."""
    short_len = default_short_dim(code_length) if short_dim is None else check_dims([short_dim], code_length)[0]
    rerank_len = code_length if rerank_dim is None else check_dims([rerank_dim], code_length)[0]
    if rerank_len <= short_len:
        raise ValueError(
            f"rerank_dim ({rerank_len}) must be longer than short_dim ({short_len}); both within [1, {code_length}]"
        )
    shortlist = None if shortlist_size is None else check_positive_int(shortlist_size, "shortlist_size")
    return short_len, rerank_len, shortlist


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def rerank(queries: np.ndarray, database, candidates: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``R`` of each query's candidates by inner product.

    Args:
        queries: ``[nq, d]`` float32 (already prefixed and normalised).
        database: ``[n, d]`` rows to rerank with: a C-contiguous float32 np.ndarray (FAISS
            computes the inner products in place) or any array-like read by ids.
        candidates: ``[nq, L]`` int64 ids (-1 = none), ``L >= R``.
        R: results per query.

    Returns:
        D ``[nq, R]`` float32 and I ``[nq, R]`` int64, best first.
    """
    nq, L = candidates.shape
    d = queries.shape[1]
    ids = np.ascontiguousarray(candidates, dtype=np.int64)
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    scores = np.empty((nq, L), dtype=np.float32)
    if isinstance(database, np.ndarray) and database.dtype == np.float32 and database.flags.c_contiguous:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(scores), faiss.swig_ptr(q), faiss.swig_ptr(database),
                                         faiss.swig_ptr(safe), d, nq, L)
    else:
        batch = max(1, (64 << 20) // (4 * L * d))
        for q0 in range(0, nq, batch):
            rows = take_rows(database, safe[q0 : q0 + batch])
            scores[q0 : q0 + batch] = np.einsum("qld,qd->ql", rows, queries[q0 : q0 + batch])
    scores[~valid] = -np.inf
    top = np.argpartition(-scores, R - 1, axis=1)[:, :R] if R < L else np.broadcast_to(np.arange(L), (nq, L))
    return sort_neighbours(np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1))


class Funnel:
    """Shortlist with ``short_dim`` dimensions, rerank with ``rerank_dim``.

    Args:
        database: codes ``[n, k]`` (np.ndarray or np.memmap).
        short_dim: shortlist prefix length (default :func:`default_short_dim`).
        rerank_dim: rerank prefix length (default k, the full length), > short_dim.
        shortlist_size: candidates kept per query (default 2 R at search time).
        shortlist_index: a prebuilt index over the normalised ``short_dim`` prefix (the benchmark
            reuses its per-length index); built with ``index_options`` if None.
        rerank_database: the normalised ``rerank_dim`` prefix ``[n, rerank_dim]`` if already built
            (a float32 np.ndarray; with the torch backend also a tensor on the shortlist's device);
            otherwise it is built in memory when it fits the budget (beside a shortlist index built
            here), else read lazily by ids.
        memory_budget_bytes: as in :func:`~retrieval.index.build_index`.
        **index_options: passed to :func:`~retrieval.index.build_index` for the shortlist index.
    """

    def __init__(self, database, *, short_dim: int | None = None, rerank_dim: int | None = None,
                 shortlist_size: int | None = None, shortlist_index: SearchIndex | None = None,
                 rerank_database=None, memory_budget_bytes: int | None = None, **index_options):
        n, k = database.shape
        self.short_dim, self.rerank_dim, self.shortlist_size = check_funnel_settings(k, short_dim, rerank_dim,
                                                                                     shortlist_size)
        budget = rows_for_budget(memory_budget_bytes, 1)
        if shortlist_index is None:
            shortlist_index = build_index(prefix_view(database, self.short_dim), memory_budget_bytes=budget,
                                          **index_options)
            if shortlist_index.stored_rows() is not None:  # what it holds comes out of the budget
                budget = max(1, budget - n * self.short_dim * 4)
        self.index = shortlist_index
        fits = n * self.rerank_dim * 4 <= budget
        self.rerank_device = "cpu"
        self._device_database = None
        if self.index.backend.name == "torch" and (fits or _is_tensor(rerank_database)):  # rerank on its device
            from .torch_search import rerank_torch, to_device

            engine = self.index.engine
            if _is_tensor(rerank_database) and rerank_database.device == engine.device:
                self._device_database = rerank_database.to(engine.dtype)
            else:
                source = prefix_view(database, self.rerank_dim) if rerank_database is None else rerank_database
                self._device_database = to_device(source, engine.device, engine.dtype)
            self._rerank_torch = rerank_torch
            self.rerank_device = self.index.backend.device
            rerank_database = None
        elif isinstance(rerank_database, np.ndarray):
            fits = True  # already in memory
        elif fits:
            rerank_database = as_float32_rows(prefix_view(database, self.rerank_dim))
        else:
            rerank_database = prefix_view(database, self.rerank_dim)
        self.rerank_database = rerank_database  # in memory when it fits, else read by ids at each rerank
        logger.debug("funnel: shortlist with %d dims, rerank with %d dims on %s (%s)", self.short_dim, self.rerank_dim,
                     self.rerank_device, "in memory" if fits else "rows read by id")
        self.ntotal = n
        self.last_seconds: dict[str, float] = {}

    def search(self, queries: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
        """Funnel search for ``queries [nq, k]`` (raw codes): D ``[nq, R]`` float32, I ``[nq, R]`` int64.

        The wall-clock seconds of each stage are left in ``last_seconds`` ("shortlist", "rerank").
        """
        R = check_R(R, self.ntotal)
        L = min(self.ntotal, self.shortlist_size or DEFAULT_SHORTLIST_FACTOR * R)
        if L < R:
            raise ValueError(f"shortlist_size = {L} is smaller than R = {R}; use a shortlist of at least R")
        t0 = time.perf_counter()
        _, candidates = self.index.search(prefix_codes(queries, self.short_dim), L)
        t1 = time.perf_counter()
        q = prefix_codes(queries, self.rerank_dim)
        if self._device_database is not None:
            D, I = self._rerank_torch(q, self._device_database, candidates, R)
        else:
            D, I = rerank(q, self.rerank_database, candidates, R)
        t2 = time.perf_counter()
        self.last_seconds = {"shortlist": t1 - t0, "rerank": t2 - t1}
        return D, I

    def info(self, R: int) -> dict:
        """Settings and the shortlist index's backend/device, JSON-serialisable."""
        return {"short_dim": self.short_dim, "rerank_dim": self.rerank_dim,
                "shortlist_size": min(self.ntotal, self.shortlist_size or DEFAULT_SHORTLIST_FACTOR * R),
                "rerank_device": self.rerank_device, "shortlist": self.index.info()}
