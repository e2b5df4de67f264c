"""How well the outputs are ordered by eigenvalue: what makes a prefix a good short code."""

from __future__ import annotations

import numpy as np

__all__ = ["spearman", "eigenvalue_order"]


def spearman(x, y) -> float:
    """Spearman's rank correlation of two [n] arrays (tied values share their average rank);
    NaN when either is constant."""
    def ranks(v: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        first = np.cumsum(counts) - counts
        return (first + (counts - 1) / 2)[inverse]

    rx, ry = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def eigenvalue_order(eigenvalues) -> float:
    """Spearman correlation between output index and eigenvalue estimate, [k] -> float.

    -1: the estimates strictly decrease with the index (the stop-grad variant's promise: the
    first m outputs are the top-m eigenfunctions); about 0: no order.
    """
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    return spearman(np.arange(len(ev)), ev)
