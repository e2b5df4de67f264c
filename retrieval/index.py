"""Build and search maximum-inner-product indexes: exact (flat) and approximate (IVF, HNSW).

``build_index(xb)`` returns an object with ``search(xq, R) -> (D, I)`` and ``info()``; the
info always names the backend, index type and device that ran. On L2-normalised rows the inner
product is the cosine similarity.

- ``flat``: exact. On the CPU, FAISS's exhaustive inner-product search (``faiss.knn``, what
  ``IndexFlatIP.search`` runs) over one float32 array the index holds; ``IndexFlatIP`` on all
  visible GPUs (sharded) with faiss-gpu; or the torch exact search. A database larger than the
  memory budget is streamed: it is read chunk by chunk at every search and a running top-R is
  merged (as FAISS ``contrib.exhaustive_search`` does), so it never has to fit in memory.
- ``ivf``: ``IndexIVFFlat`` (inner product, spherical k-means), ``nlist`` lists, ``nprobe`` probed.
- ``hnsw``: ``IndexHNSWFlat`` (inner product); FAISS has it on the CPU only.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import faiss
import numpy as np

from .arrays import as_float32_rows, read_rows, rows_for_budget, row_chunks, sort_neighbours, take_rows, work_rows
from .backend import Backend, resolve_backend
from .checks import check_codes, check_positive_int, check_R, check_same_width

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw")
# build_index options beyond the database, kind, backend, device and budget
INDEX_OPTIONS = ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "torch_dtype")


class SearchIndex:
    """Common interface: ``search(xq [nq, d], R) -> (D [nq, R] float32, I [nq, R] int64)``.

    Rows of D are descending; equal scores are ordered by id; missing results (an IVF probe that
    finds fewer than R vectors) have id -1 and the lowest score.
    """

    kind: str
    backend: Backend
    ntotal: int
    dim: int
    rows: str = "array"  # what the indexed rows are (a RowView's description)

    def search(self, xq: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``R`` rows by inner product for each query.

        Args:
            xq: ``[nq, dim]`` float queries (prefixed and normalised like the indexed rows).
            R: neighbours per query, ``1 <= R <= ntotal``.

        Returns:
            D ``[nq, R]`` float32 scores, descending; I ``[nq, R]`` int64 row ids.
        """
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if xq.ndim != 2 or xq.shape[1] != self.dim:
            raise ValueError(f"queries must be [nq, {self.dim}] to search this index; got shape {xq.shape}")
        R = check_R(R, self.ntotal)
        return sort_neighbours(*self._search(xq, R))

    def _search(self, xq: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def stored_rows(self):
        """The indexed rows ``[ntotal, dim]`` this index holds (no copy; valid while the index
        lives): a float32 np.ndarray on the CPU, a tensor for the torch backend; None when it
        holds none it can share (streamed, or on FAISS's GPUs)."""
        return None

    def info(self) -> dict:
        """Backend, device, index type, what the rows are, and parameters; JSON-serialisable."""
        return {"backend": self.backend.name, "device": self.backend.device, "index_kind": self.kind,
                "ntotal": self.ntotal, "dim": self.dim, "rows": self.rows, **self._params()}

    def _params(self) -> dict:
        return {}


def _gpu_index(cpu_index, backend: Backend):
    """``cpu_index`` cloned to all GPUs FAISS sees, the database sharded across them."""
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    return faiss.index_cpu_to_all_gpus(cpu_index, co=co, ngpu=backend.num_gpus)


# FAISS's exhaustive search switches from per-query SIMD scans to BLAS matrix products (and a heap
# per query) at nq * d >= this; FAISS 1.15's default (128,000) keeps 1,000 queries of d <= 64 on
# the scan, which ad-hoc timings on this project's 2-core machine found several times slower than
# BLAS for a 100,000-row database. BLAS from 20 queries up, whatever d.
BLAS_MIN_QUERIES = 20


@contextmanager
def _blas_from(min_queries: int, d: int):
    """Let FAISS use BLAS for batches of ``min_queries`` queries or more; restore the setting after."""
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(before, min_queries * d)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


class FaissFlatIndex(SearchIndex):
    """Exact inner product with FAISS, in memory or streamed from ``database`` chunk by chunk.

    In memory on the CPU the index is one float32 ``[n, d]`` array searched by ``faiss.knn``
    (``IndexFlatIP`` would hold a second copy while it is filled); a C-contiguous float32
    np.ndarray is used as it is, not copied. Streamed, one chunk of rows is held at a time.
    """

    kind = "flat"

    def __init__(self, database, backend: Backend, memory_budget_bytes: int | None):
        self.backend = backend
        self.ntotal, self.dim = (int(s) for s in database.shape)
        self.database = database
        budget = rows_for_budget(memory_budget_bytes, 1)
        self.in_memory = self.ntotal * self.dim * 4 <= budget
        # streamed: the chunk read (float32) is the only database-sized buffer
        self.chunk_rows = min(self.ntotal, rows_for_budget(budget, 4 * self.dim))
        self.rows_array, self.index = None, None
        if self.backend.name == "faiss-gpu":
            self.index = _gpu_index(faiss.IndexFlatIP(self.dim), self.backend)
            if self.in_memory:
                _add_in_chunks(self.index, database)
        elif self.in_memory:
            self.rows_array = as_float32_rows(database)
        logger.debug("faiss flat index: %d x %d on %s, %s", self.ntotal, self.dim, backend.device,
                     "in memory" if self.in_memory else f"streamed in chunks of {self.chunk_rows} rows")

    def stored_rows(self):
        return self.rows_array

    def _search(self, xq, R):
        with _blas_from(BLAS_MIN_QUERIES, self.dim):
            if self.in_memory:
                return self._search_rows(xq, self.rows_array, R)
            heap = faiss.ResultHeap(len(xq), R, keep_max=True)
            # one chunk buffer, refilled: a chunk read while the previous one is still referenced
            # (or a view transforming a whole chunk at once) held two or three chunks at a time
            buffer = np.empty((self.chunk_rows, self.dim), dtype=np.float32)
            for i0, i1 in row_chunks(self.ntotal, self.chunk_rows):
                rows = read_rows(self.database, i0, i1, out=buffer)
                if self.index is not None:  # on the GPUs: this chunk is the index's content for one search
                    self.index.add(rows)
                D, I = self._search_rows(xq, rows, min(R, i1 - i0))
                if self.index is not None:
                    self.index.reset()
                heap.add_result(D, I + i0)
            heap.finalize()
            return heap.D, heap.I

    def _search_rows(self, xq, rows, R):
        if self.index is not None:
            return self.index.search(xq, R)
        return faiss.knn(xq, rows, R, faiss.METRIC_INNER_PRODUCT)

    def _params(self):
        # "IndexFlatIP" on the CPU too: faiss.knn is IndexFlatIP.search without the index's copy
        return {"index": "IndexFlatIP" + (" (sharded over GPUs)" if self.backend.num_gpus > 1 else ""),
                "in_memory": self.in_memory, "chunk_rows": self.chunk_rows,
                "num_chunks": 1 if self.in_memory else -(-self.ntotal // self.chunk_rows)}


def _add_in_chunks(index, database) -> None:
    """Add ``database [n, d]`` rows to a FAISS ``index`` a small working chunk at a time (the
    index's own copy is the only database-sized buffer)."""
    n, d = database.shape
    for i0, i1 in row_chunks(n, work_rows(d)):
        index.add(np.ascontiguousarray(database[i0:i1], dtype=np.float32))


def _training_sample(database, n_train: int, seed: int) -> np.ndarray:
    n = database.shape[0]
    if n_train >= n:
        return np.ascontiguousarray(database[0:n], dtype=np.float32)
    ids = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
    return np.ascontiguousarray(take_rows(database, ids), dtype=np.float32)


class FaissIVFIndex(SearchIndex):
    """``IndexIVFFlat`` with inner product; centroids from spherical k-means on a seeded sample.

    Defaults: ``nlist = round(sqrt(n))`` (the low end of FAISS's 4..16 sqrt(n) advice, to keep
    training short), trained on ``min(n, 64 nlist)`` rows; ``nprobe = max(1, nlist // 16)``.
    """

    kind = "ivf"

    def __init__(self, database, backend: Backend, nlist: int | None, nprobe: int | None, seed: int):
        self.backend = backend
        self.ntotal, self.dim = (int(s) for s in database.shape)
        self.nlist = check_positive_int(nlist, "nlist") if nlist is not None else max(1, round(math.sqrt(self.ntotal)))
        if self.nlist > self.ntotal:
            raise ValueError(
                f"nlist = {self.nlist} is larger than the database ({self.ntotal} rows); use nlist <= {self.ntotal}"
            )
        self.nprobe = check_positive_int(nprobe, "nprobe") if nprobe is not None else max(1, self.nlist // 16)
        self.nprobe = min(self.nprobe, self.nlist)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # centroids on the unit sphere: the cosine geometry
        index.cp.seed = seed
        self.n_train = min(self.ntotal, 64 * self.nlist)
        index.train(_training_sample(database, self.n_train, seed))
        if backend.name == "faiss-gpu":
            index = _gpu_index(index, backend)
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.nprobe)
        else:
            index.nprobe = self.nprobe
        _add_in_chunks(index, database)
        self.index = index
        self._quantizer = quantizer  # the IVF index refers to it; keep it alive
        logger.debug("faiss IVF index: %d x %d on %s, nlist %d, nprobe %d, trained on %d rows", self.ntotal, self.dim,
                     backend.device, self.nlist, self.nprobe, self.n_train)

    def _search(self, xq, R):
        return self.index.search(xq, R)

    def _params(self):
        return {"index": "IndexIVFFlat", "nlist": self.nlist, "nprobe": self.nprobe, "n_train": self.n_train}


class FaissHNSWIndex(SearchIndex):
    """``IndexHNSWFlat`` with inner product (CPU only in FAISS). ``ef_search`` is raised to R if lower."""

    kind = "hnsw"

    def __init__(self, database, hnsw_m: int, ef_construction: int, ef_search: int):
        self.backend = Backend("faiss-cpu", "cpu")
        self.ntotal, self.dim = (int(s) for s in database.shape)
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef_search = check_positive_int(ef_search, "ef_search")
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        _add_in_chunks(index, database)
        self.index = index

    def _search(self, xq, R):
        self.index.hnsw.efSearch = max(self.ef_search, R)
        return self.index.search(xq, R)

    def _params(self):
        return {"index": "IndexHNSWFlat", "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search}


class TorchIndex(SearchIndex):
    """The torch exact search (:class:`~retrieval.torch_search.TorchFlatIndex`) behind the common interface."""

    kind = "flat"

    def __init__(self, database, backend: Backend, memory_budget_bytes: int | None, dtype=None):
        from .torch_search import TorchFlatIndex

        self.backend = backend
        self.ntotal, self.dim = (int(s) for s in database.shape)
        self.engine = TorchFlatIndex(database, device=backend.device, dtype=dtype,
                                     memory_budget_bytes=memory_budget_bytes)

    def stored_rows(self):
        return self.engine.stored

    def _search(self, xq, R):
        return self.engine.search(xq, R)

    def _params(self):
        return self.engine.info()


def build_index(
    database,
    *,
    index: str = "flat",
    backend: str | Backend = "auto",
    device: str | None = None,
    memory_budget_bytes: int | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 64,
    ef_search: int = 128,
    torch_dtype=None,
    seed: int = 0,
) -> SearchIndex:
    """An inner-product index over ``database``.

    Args:
        database: array-like ``[n, d]`` of floats, sliceable by rows (np.ndarray, np.memmap,
            :class:`~retrieval.arrays.RowView`). Values must be finite: :func:`search` and
            :func:`retrieval.run_benchmark` check the arrays they are given; this does not.
        index: "flat" (exact), "ivf" or "hnsw" (approximate).
        backend: "auto", "faiss-cpu", "faiss-gpu", "torch", or a resolved :class:`Backend`.
            Approximate indexes are FAISS only: with the torch backend they run on FAISS's CPU;
            HNSW always runs on the CPU (``info()`` says so).
        device: torch device for the torch backend.
        memory_budget_bytes: bytes of database rows held at once (default 4 GiB). A flat index
            larger than that is streamed from ``database`` at every search.
        nlist, nprobe: IVF lists and lists probed per query (defaults: see :class:`FaissIVFIndex`).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        torch_dtype: storage dtype of the torch backend (default float16 on CUDA, float32 on CPU).
        seed: seed of the IVF training sample and k-means.

    Returns:
        a :class:`SearchIndex`.
    """
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}; got {index!r}")
    if getattr(database, "ndim", len(getattr(database, "shape", ()))) != 2 or database.shape[0] == 0:
        raise ValueError(f"database must be a non-empty [n, d] array; got shape {getattr(database, 'shape', None)}")
    chosen = backend if isinstance(backend, Backend) else resolve_backend(backend, device)
    if index == "flat" and chosen.name == "torch":
        built = TorchIndex(database, chosen, memory_budget_bytes, torch_dtype)
    elif index == "flat":
        built = FaissFlatIndex(database, chosen, memory_budget_bytes)
    elif index == "hnsw":
        built = FaissHNSWIndex(database, hnsw_m, ef_construction, ef_search)
    else:  # IVF: FAISS's, on its GPUs with faiss-gpu, else on the CPU
        cpu = Backend("faiss-cpu", "cpu")
        built = FaissIVFIndex(database, chosen if chosen.name == "faiss-gpu" else cpu, nlist, nprobe, seed)
    n, d = database.shape
    built.rows = getattr(database, "description", f"{type(database).__name__} {n} x {d}")
    return built


def search(queries, database, R: int, **index_options) -> tuple[np.ndarray, np.ndarray, dict]:
    """Check the inputs, build an index over ``database`` and search it once.

    Args:
        queries: ``[nq, d]`` float array.
        database: ``[n, d]`` float array-like (np.ndarray or np.memmap); read by row chunks.
        R: neighbours per query, ``1 <= R <= n``.
        **index_options: passed to :func:`build_index` (index, backend, device, memory budget...).

    Returns:
        D ``[nq, R]`` float32 scores (descending), I ``[nq, R]`` int64 ids, and the index's
        ``info()`` (backend, device, index type, parameters).
    """
    check_codes(database, "database")
    check_codes(queries, "queries")
    check_same_width(queries, database)
    R = check_R(R, database.shape[0])
    index = build_index(database, **index_options)
    D, I = index.search(np.asarray(queries), R)
    return D, I, index.info()
