"""Array-likes read by row chunks: a database never has to be in memory as a whole.

A :class:`RowView` is a lazy ``[n, width]`` float32 array whose rows are computed from a source
(np.ndarray, np.memmap, or anything sliceable by rows) when a chunk is asked for: a prefix of
the codes re-normalised, a random subset of dimensions, a PCA projection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

DEFAULT_MEMORY_BUDGET_BYTES = 4 << 30
# rows read, transformed and copied at once while a buffer is filled: large enough for BLAS and
# sequential reads, small enough to count as a fixed overhead beside the memory budget
WORK_CHUNK_BYTES = 64 << 20


def l2_normalize(x, *, copy: bool = True) -> np.ndarray:
    """Rows divided by their L2 norm, as a new C-contiguous float32 array.

    Args:
        x: array-like ``[n, d]``.
        copy: False normalises ``x`` in place when it already is a C-contiguous float32
            np.ndarray (a fresh array the caller owns); a copy is made otherwise.

    Returns:
        ``[n, d]`` float32; an all-zero row stays zero (its cosine similarity to anything is 0).
    """
    out = np.array(x, dtype=np.float32, order="C", copy=True if copy else None)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    np.divide(out, norms[:, None], out=out, where=norms[:, None] > 0)
    return out


def row_chunks(n: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges covering ``[0, n)`` in chunks of ``chunk_rows`` rows."""
    for i0 in range(0, n, chunk_rows):
        yield i0, min(n, i0 + chunk_rows)


def rows_for_budget(memory_budget_bytes: int | None, bytes_per_row: int) -> int:
    """How many rows of ``bytes_per_row`` bytes fit ``memory_budget_bytes`` (at least 1)."""
    budget = DEFAULT_MEMORY_BUDGET_BYTES if memory_budget_bytes is None else memory_budget_bytes
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"memory_budget_bytes must be a positive integer (bytes) or None; got {budget!r}")
    return max(1, int(budget) // max(1, bytes_per_row))


def work_rows(width: int) -> int:
    """Rows of a working chunk of a ``[n, width]`` source: ``WORK_CHUNK_BYTES`` of float32 rows."""
    return max(1, WORK_CHUNK_BYTES // (4 * max(1, int(width))))


class RowView:
    """A lazy ``[n, width]`` float32 array: ``view[i:j] == transform(source[i:j])``.

    Args:
        source: array-like ``[n, d]`` sliceable by rows (np.ndarray, np.memmap, another RowView).
        transform: maps a ``[rows, d]`` block to a ``[rows, width]`` float32 block, row-wise.
        width: number of columns the transform returns.
        description: what the view holds, for index info and reports (e.g. "prefix 128 of 2048,
            L2-normalised").
    """

    def __init__(self, source, transform: Callable[[np.ndarray], np.ndarray], width: int, description: str):
        self.source = source
        self.transform = transform
        self.width = int(width)
        self.description = description

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"a RowView is read by contiguous row slices (view[i:j]); got {rows!r}")
        return self.transform(np.asarray(self.source[rows]))

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (any shape of int64 ids in ``[0, n)``), shape ``ids.shape + (width,)``.

        Each distinct row is read once, in increasing order (sequential reads from a memmap).
        """
        ids = np.asarray(ids, dtype=np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        rows = self.transform(np.asarray(self.source[unique]))
        return rows[inverse.reshape(ids.shape)]


def read_rows(x, i0: int, i1: int, out: np.ndarray | None = None, chunk_rows: int | None = None) -> np.ndarray:
    """Rows ``i0:i1`` of an array-like ``[n, d]`` as C-contiguous float32 ``[i1 - i0, d]``, written
    into ``out`` (a reused buffer of at least that many rows) or a new array, ``chunk_rows`` at a
    time (default a working chunk): a view's transform (a PCA's centred full-width copy, a
    subset's gather) then holds one chunk's temporaries, never the whole range's."""
    d = int(x.shape[1])
    out = np.empty((i1 - i0, d), dtype=np.float32) if out is None else out[: i1 - i0]
    if chunk_rows is None:
        chunk_rows = work_rows(x.source.shape[1] if isinstance(x, RowView) else d)
    for j0, j1 in row_chunks(i1 - i0, chunk_rows):
        out[j0:j1] = x[i0 + j0 : i0 + j1]
    return out


def materialize(x, chunk_rows: int) -> np.ndarray:
    """``x`` (array-like ``[n, d]``) as one C-contiguous float32 array, read ``chunk_rows`` at a time."""
    return read_rows(x, 0, int(x.shape[0]), chunk_rows=chunk_rows)


def as_float32_rows(x) -> np.ndarray:
    """``x`` as one C-contiguous float32 array in memory: a plain (not memory-mapped) array that
    already is one is returned as it is; anything else is read working chunk by working chunk
    (the result is then the only buffer of its size)."""
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    width = x.source.shape[1] if isinstance(x, RowView) else x.shape[1]
    return materialize(x, work_rows(width))


def take_rows(x, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of an array-like ``[n, d]`` as float32, shape ``ids.shape + (d,)``."""
    if isinstance(x, RowView):
        return x.take(ids)
    ids = np.asarray(ids, dtype=np.int64)
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        return np.asarray(x[ids], dtype=np.float32)
    unique, inverse = np.unique(ids, return_inverse=True)
    return np.asarray(x[unique], dtype=np.float32)[inverse.reshape(ids.shape)]


def sort_neighbours(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``(D, I)`` ordered by score descending, equal scores by id ascending.

    The canonical order makes results reproducible whatever order a backend returns equal
    scores in. Args and returns: D ``[nq, R]`` float32, I ``[nq, R]`` int64.
    """
    D = np.asarray(D, dtype=np.float32)
    I = np.asarray(I, dtype=np.int64)
    order = np.argsort(-D, axis=1, kind="stable")  # nearly free on the sorted rows FAISS returns
    D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
    tied = (D[:, 1:] == D[:, :-1]).any(axis=1)
    if tied.any():  # only rows holding equal scores need the (slower) two-key sort
        rows = np.flatnonzero(tied)
        order = np.lexsort((I[rows], -D[rows]), axis=-1)
        D[rows] = np.take_along_axis(D[rows], order, axis=1)
        I[rows] = np.take_along_axis(I[rows], order, axis=1)
    return D, I
