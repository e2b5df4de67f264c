"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO's eval).

Cosine similarity (rows L2-normalised); each of the k nearest training samples votes for its
class with weight exp(similarity / T). Several k are evaluated from one search. The training
set is read in blocks within a memory budget, so a memory-mapped database of any size works.

On the CPU each block is searched by FAISS's exact inner-product top-k (BLAS matrix products
and a heap per query) and the blocks' results are merged in a ``faiss.ResultHeap``: the same
calls as a plain blocked FAISS search, measured against one by ``tools/bench_scale.py``. The
search it replaced (torch ``matmul`` + ``topk`` per block) ran at 0.77 of that on 1.28 M x
2,048 features: PyTorch's MKL matrix product ran at ~100 GFLOP/s on this project's AMD CPUs
where FAISS's OpenBLAS ran at ~165, and each block was copied three times (read, finiteness
mask, normalised copy). Other devices (CUDA) keep the torch search.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Mapping, Sequence, Union

import faiss
import numpy as np
import torch

from retrieval.progress import Progress


__all__ = ["knn_predict", "knn_top1", "knn_report", "near_duplicates", "database_block_rows",
           "DEFAULT_MEMORY_BUDGET_BYTES", "FIXED_OVERHEAD_BYTES"]

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

# The database is read in row blocks, so a memory map larger than memory (ImageNet codes: 1.28 M x
# 8,192 floats, 42 GB) is never loaded whole; each query keeps a running top-k over the blocks.
DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30

# Memory the search holds besides the budget's block, whatever the database's size: FAISS's
# score tile (4,096 queries x 1,024 rows, float32). What grows with the queries comes on top:
# Q x D x 4 bytes of normalised queries, Q x k x 24 of running and per-block top-k, and the
# labels (N x 8); see knn_predict.
FIXED_OVERHEAD_BYTES = 4096 * 1024 * 4

# FAISS scans query by query below nq * d = 128,000 (its default) and uses BLAS above: from 20
# queries up BLAS is the faster one at any width (retrieval/index.py measured the same).
_BLAS_MIN_QUERIES = 20


def database_block_rows(dim: int, query_rows: int, memory_budget_bytes: int) -> int:
    """Database rows per block so that the block [rows, dim] and its scores [query_rows, rows]
    (float32) take at most ``memory_budget_bytes``. (The CPU search holds only the block and a
    fixed tile of scores; the torch search on other devices holds both.)

    Raises:
        ValueError: a budget too small for one row and its scores.
    """
    per_row = 4 * (dim + query_rows)
    if isinstance(memory_budget_bytes, bool) or not isinstance(memory_budget_bytes, (int, np.integer)) \
            or memory_budget_bytes < per_row:
        raise ValueError(f"kNN memory budget: got {memory_budget_bytes!r}; accepted: an integer number of bytes "
                         f"of at least {per_row}, one database row and its scores (width {dim}, "
                         f"{query_rows} queries per block)")
    return int(memory_budget_bytes) // per_row


def _float32_rows(x: ArrayLike) -> np.ndarray:
    """A C-contiguous float32 copy of [n, D] rows (memory maps are read-only; tensors may be on a GPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.array(x, dtype=np.float32, order="C")


def _int64_labels(y: ArrayLike) -> torch.Tensor:
    """A CPU int64 copy of [n] labels (a copy: memory maps are read-only)."""
    if isinstance(y, torch.Tensor):
        return y.detach().to("cpu", torch.int64).clone()
    return torch.from_numpy(np.array(y, dtype=np.int64))


def _all_finite(x: np.ndarray) -> bool:
    """No NaN or inf in x: one multi-threaded sum (NaN and inf survive any sum), and an exact
    check only when the sum is not finite (finite values can overflow float32 together)."""
    return math.isfinite(float(torch.from_numpy(x).sum())) or bool(np.isfinite(x).all())


@contextmanager
def _blas_from(min_queries: int, dim: int):
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(before, min_queries * dim)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


@torch.no_grad()
def knn_predict(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, *, ks: Sequence[int],
                temperature: float = 0.07, num_classes: int | None = None, chunk_size: int = 1024,
                memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
                device: Union[str, torch.device] = "cpu") -> dict[int, torch.Tensor]:
    """Weighted kNN predictions for every k in ``ks``.

    Memory: one database block of at most ``memory_budget_bytes`` (read into one buffer that
    every block reuses, normalised in place) plus :data:`FIXED_OVERHEAD_BYTES`, plus what grows
    with the test set and k: the normalised test features (Q x D x 4 bytes), the running and
    the block's top-k (Q x k x 24) and the labels (N x 8).

    Args:
        train_x: [N, D] training features (the database): an array, a memory map (read in row
            blocks, never whole) or a tensor; train_y: [N] int labels.
        test_x: [Q, D] features to classify (held in memory).
        ks: neighbour counts, each in [1, N].
        temperature: T in the vote weight exp(cos / T).
        num_classes: C (default: max label + 1).
        chunk_size: test rows per similarity block of the torch search (other devices than the
            CPU) and per vote.
        memory_budget_bytes: bytes of one database block and its [chunk_size, rows] scores
            (:func:`database_block_rows`); default 1 GiB.
        device: where the search runs: "cpu" (FAISS) or a torch device such as "cuda".

    Returns:
        {k: [Q] int64 predicted class}; ties between classes go to the lower class index.

    Raises:
        ValueError: empty sets, mismatched widths or lengths, a k outside [1, N], non-finite
            features, a memory budget below one row.
    """
    device = torch.device(device)
    n, xq = len(train_x), _float32_rows(test_x)
    yb = _int64_labels(train_y)
    if len(train_x.shape) != 2 or xq.ndim != 2 or train_x.shape[1] != xq.shape[1]:
        raise ValueError(f"kNN needs [N, D] training and [Q, D] test features of one width; got "
                         f"{tuple(train_x.shape)} and {tuple(xq.shape)}")
    if n == 0 or len(xq) == 0:
        raise ValueError(f"kNN needs a non-empty training set and test set; got {n} and {len(xq)} rows")
    if yb.shape != (n,):
        raise ValueError(f"train_y has shape {tuple(yb.shape)}; expected ({n},), one label per training row")
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"k = {bad} outside [1, {n}] (the training set's size)")
    if not _all_finite(xq):
        raise ValueError("kNN test features hold NaN or inf; accepted: finite values")
    faiss.normalize_L2(xq)
    sims, idx = _nearest(train_x, xq, max(ks), chunk_size, memory_budget_bytes, device)
    classes = num_classes or int(yb.max()) + 1
    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for q0 in range(0, len(xq), chunk_size):
        weights = (sims[q0:q0 + chunk_size] / temperature).exp()  # [q, k_max], best first
        labels = yb[idx[q0:q0 + chunk_size]]
        for k in ks:
            votes = torch.zeros(len(labels), classes)
            votes.scatter_add_(1, labels[:, :k], weights[:, :k])
            out[k].append(votes.argmax(dim=1))
    return {k: torch.cat(v) for k, v in out.items()}


def _nearest(train_x: ArrayLike, xq: np.ndarray, k: int, chunk_size: int, memory_budget_bytes: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities [Q, k] (best first) and database rows [Q, k] of the k nearest training
    rows to each L2-normalised query row of xq [Q, D], reading train_x [N, D] block by block."""
    n, dim = len(train_x), xq.shape[1]
    block = min(n, database_block_rows(dim, min(chunk_size, len(xq)), memory_budget_bytes))
    buffer = np.empty((block, dim), dtype=np.float32)  # every block is read into it: memory stays flat
    search = _FaissTopK(xq, k) if device.type == "cpu" else _TorchTopK(xq, k, chunk_size, device)
    progress = Progress(math.ceil(n / block), "kNN", unit="block", every_seconds=10.0, logger=log)
    for b0 in range(0, n, block):
        rows = buffer[:min(block, n - b0)]
        _read_block(train_x, b0, rows)
        search.add(rows, b0)
        progress.update(1, f"{b0 + len(rows)} of {n} training rows, {len(xq)} queries, k = {k}")
    progress.close()
    return search.result()


def _read_block(train_x: ArrayLike, b0: int, out: np.ndarray) -> None:
    """Rows b0 .. b0 + len(out) of train_x into ``out``, checked finite and L2-normalised in place."""
    block = train_x[b0:b0 + len(out)]
    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().numpy()
    np.copyto(out, block, casting="unsafe")  # any float or int dtype to float32, as np.array(x, float32)
    if not _all_finite(out):
        raise ValueError(f"kNN training features hold NaN or inf (rows {b0}-{b0 + len(out) - 1}); "
                         f"accepted: finite values")
    faiss.normalize_L2(out)  # an all-zero row stays zero: its cosine with anything is 0


class _FaissTopK:
    """Exact top-k by inner product over blocks: FAISS per block, merged in a ResultHeap."""

    def __init__(self, xq: np.ndarray, k: int):
        self.xq, self.k = xq, k
        self.heap = faiss.ResultHeap(len(xq), k, keep_max=True)

    def add(self, rows: np.ndarray, b0: int) -> None:
        with _blas_from(_BLAS_MIN_QUERIES, rows.shape[1]):
            D, I = faiss.knn(self.xq, rows, min(self.k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
        I += b0
        self.heap.add_result(D, I)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.heap.finalize()  # sorted, best first
        return torch.from_numpy(self.heap.D), torch.from_numpy(self.heap.I)


class _TorchTopK:
    """The same search as torch matrix products and ``topk`` on ``device`` (a GPU)."""

    def __init__(self, xq: np.ndarray, k: int, chunk_size: int, device: torch.device):
        self.xq, self.k, self.chunk_size, self.device = torch.from_numpy(xq).to(device), k, chunk_size, device
        self.best_sims = torch.full((len(xq), k), -math.inf, device=device)
        self.best_idx = torch.zeros((len(xq), k), dtype=torch.int64, device=device)

    def add(self, rows: np.ndarray, b0: int) -> None:
        xb = torch.from_numpy(rows).to(self.device)
        for q0 in range(0, len(self.xq), self.chunk_size):
            q1 = q0 + self.chunk_size
            sims, idx = (self.xq[q0:q1] @ xb.T).topk(min(self.k, len(xb)), dim=1)
            merged_sims = torch.cat([self.best_sims[q0:q1], sims], dim=1)
            merged_idx = torch.cat([self.best_idx[q0:q1], idx + b0], dim=1)
            top, pos = merged_sims.topk(self.k, dim=1)
            self.best_sims[q0:q1], self.best_idx[q0:q1] = top, merged_idx.gather(1, pos)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.best_sims.cpu(), self.best_idx.cpu()


def knn_top1(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
             ks: Sequence[int] = (20, 200), temperature: float = 0.07, num_classes: int | None = None,
             memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
             device: Union[str, torch.device] = "cpu") -> dict[int, float]:
    """Top-1 accuracy in percent of :func:`knn_predict` for each k (k capped at the training set's size).

    Args:
        test_y: [Q] int labels of ``test_x``; the others as for :func:`knn_predict`.

    Returns:
        {k: top-1 %}, keyed by the k asked for.
    """
    n = len(train_x)
    capped = {k: min(k, n) for k in ks}
    preds = knn_predict(train_x, train_y, test_x, ks=sorted(set(capped.values())), temperature=temperature,
                        num_classes=num_classes, memory_budget_bytes=memory_budget_bytes, device=device)
    truth = _int64_labels(test_y)
    return {k: 100.0 * float((preds[capped[k]] == truth).float().mean()) for k in ks}


def knn_report(train: Mapping[str, ArrayLike], train_y: ArrayLike, test: Mapping[str, ArrayLike],
               test_y: ArrayLike, *, ks: Sequence[int] = (20, 200), temperature: float = 0.07,
               num_classes: int | None = None, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
               device: Union[str, torch.device] = "cpu") -> dict:
    """The kNN evaluation on its own (``eigenmap probe``'s kNN part, and its kNN-only mode):
    :func:`knn_top1` on each named array pair, e.g. ``{"features": F, "codes": C}``.

    Args:
        train, test: name -> [N, D_name] training and [Q, D_name] test arrays (same names).
        train_y, test_y: [N] and [Q] int labels, shared by every pair.
        ks, temperature, num_classes, memory_budget_bytes, device: as for :func:`knn_predict`
            (the budget applies to each search in turn, one at a time).

    Returns:
        ``{"temperature", "ks", "top1": {name: {str(k): top-1 %}}, "seconds": {name: s},
        "memory_budget_bytes", "device"}``.

    Raises:
        ValueError: different names in ``train`` and ``test``; the errors of :func:`knn_predict`.
    """
    import time

    if set(train) != set(test):
        raise ValueError(f"kNN needs the same arrays of both sets; got {sorted(train)} and {sorted(test)}")
    top1, seconds = {}, {}
    for name in train:
        started = time.perf_counter()
        log.info("kNN on %s: %d training rows x %d, %d queries, k = %s", name, len(train[name]),
                 train[name].shape[1], len(test[name]), ", ".join(map(str, ks)))
        accs = knn_top1(train[name], train_y, test[name], test_y, ks=ks, temperature=temperature,
                        num_classes=num_classes, memory_budget_bytes=memory_budget_bytes, device=device)
        top1[name], seconds[name] = {str(k): v for k, v in accs.items()}, time.perf_counter() - started
    return {"temperature": temperature, "ks": list(ks), "top1": top1, "seconds": seconds,
            "memory_budget_bytes": int(memory_budget_bytes), "device": str(torch.device(device))}


@torch.no_grad()
def near_duplicates(database: ArrayLike, queries: ArrayLike, *, min_cosine: float, examples: int = 5,
                    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> dict:
    """The queries whose nearest database row is at cosine >= ``min_cosine``: rows of one set that
    are (near) copies of rows of another, e.g. a validation set leaked into a training set.

    Args:
        database: [N, D] rows (an array, a memory map read in blocks, or a tensor).
        queries: [Q, D] rows of the same width.
        min_cosine: the similarity from which a pair counts as a duplicate.
        examples: how many of the closest pairs to return.
        memory_budget_bytes: as for :func:`knn_predict`.

    Returns:
        ``{"min_cosine", "count": queries with a duplicate, "queries": Q, "share": count / Q,
        "examples": [{"query": i, "database": j, "cosine": c}, ...]}`` (closest first).

    Raises:
        ValueError: as :func:`knn_predict` (empty sets, widths, non-finite rows).
    """
    xq = _float32_rows(queries)
    if len(database.shape) != 2 or xq.ndim != 2 or database.shape[1] != xq.shape[1] or not len(database) \
            or not len(xq):
        raise ValueError(f"near-duplicate search needs non-empty [N, D] and [Q, D] rows of one width; got "
                         f"{tuple(database.shape)} and {tuple(xq.shape)}")
    if not _all_finite(xq):
        raise ValueError("near-duplicate search: the queries hold NaN or inf; accepted: finite values")
    faiss.normalize_L2(xq)
    sims, idx = _nearest(database, xq, 1, 1024, memory_budget_bytes, torch.device("cpu"))
    sims, idx = sims[:, 0].numpy(), idx[:, 0].numpy()
    hits = np.flatnonzero(sims >= min_cosine)
    closest = hits[np.argsort(-sims[hits], kind="stable")][:examples]
    return {"min_cosine": float(min_cosine), "count": int(len(hits)), "queries": int(len(xq)),
            "share": len(hits) / len(xq),
            "examples": [{"query": int(q), "database": int(idx[q]), "cosine": round(float(sims[q]), 5)}
                         for q in closest]}
