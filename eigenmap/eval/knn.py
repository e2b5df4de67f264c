"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO's eval).

Cosine similarity (rows L2-normalised); each of the k nearest training samples votes for its
class with weight exp(similarity / T). Several k are evaluated from one search. The training
set is read in blocks within a memory budget, so a memory-mapped database of any size works.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["knn_predict", "knn_top1"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    # a copy: memory maps are read-only, and torch must not alias them
    return torch.from_numpy(np.array(x, dtype=torch.empty((), dtype=dtype).numpy().dtype)).to(device)


# The database is read in row blocks, so a memory map larger than memory (ImageNet codes: 1.28 M x
# 8,192 floats, 42 GB) is never loaded whole; each query keeps a running top-k over the blocks.
DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30


def database_block_rows(dim: int, query_rows: int, memory_budget_bytes: int) -> int:
    """Database rows per block so that the block [rows, dim] and its scores [query_rows, rows]
    (float32) take at most ``memory_budget_bytes``.

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


@torch.no_grad()
def knn_predict(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, *, ks: Sequence[int],
                temperature: float = 0.07, num_classes: int | None = None, chunk_size: int = 1024,
                memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
                device: Union[str, torch.device] = "cpu") -> dict[int, torch.Tensor]:
    """Weighted kNN predictions for every k in ``ks``.

    Args:
        train_x: [N, D] training features (the database): an array, a memory map (read in row
            blocks, never whole) or a tensor; train_y: [N] int labels.
        test_x: [Q, D] features to classify (held in memory).
        ks: neighbour counts, each in [1, N].
        temperature: T in the vote weight exp(cos / T).
        num_classes: C (default: max label + 1).
        chunk_size: test rows per similarity block.
        memory_budget_bytes: bytes of one database block and its [chunk_size, rows] scores
            (:func:`database_block_rows`); default 1 GiB.
        device: where the search runs.

    Returns:
        {k: [Q] int64 predicted class}; ties between classes go to the lower class index.

    Raises:
        ValueError: empty sets, mismatched widths or lengths, a k outside [1, N], non-finite
            features, a memory budget below one row.
    """
    device = torch.device(device)
    n, xq = len(train_x), _as_tensor(test_x, device)
    yb = _as_tensor(train_y, device, torch.int64)
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
    if not torch.isfinite(xq).all():
        raise ValueError("kNN test features hold NaN or inf; accepted: finite values")
    sims, idx = _nearest(train_x, F.normalize(xq, dim=1), max(ks), chunk_size, memory_budget_bytes, device)
    classes = num_classes or int(yb.max()) + 1
    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for q0 in range(0, len(xq), chunk_size):
        weights = (sims[q0:q0 + chunk_size] / temperature).exp()  # [q, k_max], best first
        labels = yb[idx[q0:q0 + chunk_size]]
        for k in ks:
            votes = torch.zeros(len(labels), classes, device=device)
            votes.scatter_add_(1, labels[:, :k], weights[:, :k])
            out[k].append(votes.argmax(dim=1))
    return {k: torch.cat(v).cpu() for k, v in out.items()}


def _nearest(train_x: ArrayLike, xq: torch.Tensor, k: int, chunk_size: int, memory_budget_bytes: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities [Q, k] (best first) and database rows [Q, k] of the k nearest training
    rows to each L2-normalised query row of xq [Q, D], reading train_x [N, D] block by block."""
    block = database_block_rows(xq.shape[1], min(chunk_size, len(xq)), memory_budget_bytes)
    best_sims = torch.full((len(xq), k), -math.inf, device=device)
    best_idx = torch.zeros((len(xq), k), dtype=torch.int64, device=device)
    for b0 in range(0, len(train_x), block):
        xb = _as_tensor(train_x[b0:b0 + block], device)
        if not torch.isfinite(xb).all():
            raise ValueError(f"kNN training features hold NaN or inf (rows {b0}-{b0 + len(xb) - 1}); "
                             f"accepted: finite values")
        xb = F.normalize(xb, dim=1)
        for q0 in range(0, len(xq), chunk_size):
            q1 = q0 + chunk_size
            sims, idx = (xq[q0:q1] @ xb.T).topk(min(k, len(xb)), dim=1)
            merged_sims = torch.cat([best_sims[q0:q1], sims], dim=1)
            merged_idx = torch.cat([best_idx[q0:q1], idx + b0], dim=1)
            top, pos = merged_sims.topk(k, dim=1)
            best_sims[q0:q1], best_idx[q0:q1] = top, merged_idx.gather(1, pos)
    return best_sims, best_idx


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
    truth = _as_tensor(test_y, torch.device("cpu"), torch.int64)
    return {k: 100.0 * float((preds[capped[k]] == truth).float().mean()) for k in ks}
