"""Baselines a prefix of length m is compared with, built from the same codes:

- a random m-subset of the dimensions (several seeded draws: the spread shows how much the
  choice of dimensions matters), re-normalised like the prefix;
- PCA to m dimensions, fitted on the database (centred by the database mean), then normalised.

Both are lazy :class:`~retrieval.arrays.RowView` objects, so a memmapped database is read chunk
by chunk; the PCA covariance is accumulated chunk by chunk in float64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .arrays import RowView, l2_normalize, row_chunks, rows_for_budget, take_rows, work_rows
from .checks import check_dims, check_positive_int

logger = logging.getLogger(__name__)

# rows the PCA is fitted on by default: enough for a stable covariance of 8,192 dimensions,
# bounded so the fit stays minutes, not hours, on ImageNet-size databases
DEFAULT_PCA_FIT_ROWS = 200_000


def random_subset(code_length: int, m: int, draw: int, seed: int = 0) -> np.ndarray:
    """Sorted column ids ``[m]`` of draw ``draw``; the same (seed, m, draw) gives the same subset."""
    check_dims([m], code_length)
    rng = np.random.default_rng([seed, m, draw])
    return np.sort(rng.choice(code_length, m, replace=False))


def subset_view(codes, columns: np.ndarray) -> RowView:
    """Lazy ``[n, len(columns)]`` view: the chosen columns of ``codes [n, k]``, L2-normalised per row."""
    columns = np.asarray(columns, dtype=np.int64)
    # np.take is several times faster than fancy indexing block[:, columns] on wide row blocks
    return RowView(codes, lambda block: l2_normalize(np.take(block, columns, axis=1), copy=False), len(columns),
                   f"random {len(columns)}-subset, L2-normalised")


@dataclass(frozen=True)
class PCA:
    """A PCA basis: ``mean [k]``, ``components [k, k]`` (column i = i-th principal axis, by
    decreasing variance), ``variances [k]`` and the number of rows it was fitted on."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    fit_rows: int


def fit_pca(database, *, max_rows: int | None = DEFAULT_PCA_FIT_ROWS, seed: int = 0,
            memory_budget_bytes: int | None = None) -> PCA:
    """PCA of ``database [n, k]`` (array-like, read by row chunks; two passes: mean, then covariance).

    Args:
        database: array-like ``[n, k]``.
        max_rows: fit on a seeded random sample of this many rows (all rows if None or >= n).
        seed: seed of the sample.
        memory_budget_bytes: bytes of rows read at once (default: small working chunks of
            float64 rows, which BLAS runs at full speed).

    Returns:
        a :class:`PCA`.
    """
    n, k = database.shape
    rows = n if max_rows is None else min(n, check_positive_int(max_rows, "pca max_rows"))
    ids = None if rows == n else np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))
    # a chunk as float64 and its centred copy
    chunk = work_rows(4 * k) if memory_budget_bytes is None else rows_for_budget(memory_budget_bytes, 16 * k)

    def blocks():
        for i0, i1 in row_chunks(rows, chunk):
            block = database[i0:i1] if ids is None else take_rows(database, ids[i0:i1])
            yield np.asarray(block, dtype=np.float64)

    mean = sum(block.sum(axis=0) for block in blocks()) / rows
    cov = np.zeros((k, k))
    for block in blocks():
        centred = block - mean
        cov += centred.T @ centred
    cov /= max(1, rows - 1)
    variances, axes = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    logger.info("PCA fitted on %d of %d rows, %d dimensions", rows, n, k)
    return PCA(mean.astype(np.float32), np.ascontiguousarray(axes[:, order], dtype=np.float32),
               variances[order], rows)


def pca_view(codes, pca: PCA, m: int) -> RowView:
    """Lazy ``[n, m]`` view: ``codes [n, k]`` centred, projected on the first ``m`` axes, L2-normalised."""
    k = codes.shape[1]
    check_dims([m], k)
    basis = np.ascontiguousarray(pca.components[:, :m])
    return RowView(codes, lambda block: l2_normalize((np.asarray(block, dtype=np.float32) - pca.mean) @ basis),
                   m, f"PCA to {m} of {k}, L2-normalised")
