"""Prefix truncation: a code of length m is the first m dimensions, re-normalised per sample.

The eigenfunction outputs are ordered by eigenvalue, so the first m dimensions form a usable
short code. Similarity is the cosine: the inner product of L2-normalised prefixes.
"""

from __future__ import annotations

import numpy as np

from .arrays import RowView, l2_normalize, materialize, rows_for_budget, work_rows
from .checks import check_dims


# the official Neural Eigenmaps retrieval code scores lengths from 4: an L2-normalised code of one
# or two dimensions keeps little more than their signs, and the first output tends to the kernel's
# top eigenfunction, the constant one, which ranks nothing
FIRST_DEFAULT_LENGTH = 4


def default_lengths(code_length: int) -> list[int]:
    """Powers of two from 4 (as the official Neural Eigenmaps code starts) up to ``code_length``,
    and ``code_length`` itself; shorter lengths are scored only when asked for (``dims``).

    Example: 2048 -> [4, 8, ..., 1024, 2048]; 100 -> [4, 8, ..., 64, 100]; 3 -> [3].
    """
    if code_length < 1:
        raise ValueError(f"code_length must be at least 1; got {code_length}")
    lengths = [FIRST_DEFAULT_LENGTH << i for i in range(int(code_length).bit_length())
               if FIRST_DEFAULT_LENGTH << i < code_length]
    return lengths + [int(code_length)]


def resolve_lengths(dims, code_length: int) -> list[int]:
    """``dims`` checked (ints in ``[1, code_length]``, sorted, unique), or the default lengths if None."""
    checked = check_dims(dims, code_length)
    return default_lengths(code_length) if checked is None else checked


def prefix_view(codes, m: int) -> RowView:
    """Lazy ``[n, m]`` view of the first ``m`` dimensions of ``codes [n, k]``, L2-normalised per row.

    Nothing is read until a row range is asked for, so ``codes`` may be a memmap larger than memory.
    """
    k = codes.shape[1]
    check_dims([m], k)
    return RowView(codes, lambda block: l2_normalize(block[:, :m]), m, f"prefix {m} of {k}, L2-normalised")


def prefix_codes(codes, m: int, memory_budget_bytes: int | None = None) -> np.ndarray:
    """The first ``m`` dimensions of ``codes [n, k]``, L2-normalised per row, in memory.

    Returns:
        ``[n, m]`` C-contiguous float32 (read from ``codes`` in small working chunks, or in
        chunks of at most ``memory_budget_bytes``).
    """
    view = prefix_view(codes, m)
    k = codes.shape[1]
    return materialize(view, work_rows(k) if memory_budget_bytes is None else rows_for_budget(memory_budget_bytes, 8 * k))

