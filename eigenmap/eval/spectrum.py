"""How well the outputs are ordered by eigenvalue: what makes a prefix a good short code."""

from __future__ import annotations

import numpy as np

__all__ = ["spearman", "eigenvalue_order", "spectrum_figure"]


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


def spectrum_figure(eigenvalues):
    """The eigenvalue estimates [k] in output order (what a prefix keeps) and sorted, as a
    matplotlib Figure on the Agg canvas (headless; no pyplot state): the run report saves it as
    a PNG, TensorBoard's ``add_figure`` logs it every epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    fig = Figure(figsize=(8, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    index = np.arange(1, len(ev) + 1)
    ax.plot(index, ev, ".-", markersize=3, linewidth=1, label="estimate of output j (output order)")
    ax.plot(index, np.sort(ev)[::-1], "--", linewidth=1, label="the same, sorted (decreasing)")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("output index j (log2 scale): a code of length m keeps j <= m")
    ax.set_ylabel("eigenvalue estimate (L2-BatchNorm EMA)")
    ax.set_title("Eigenvalue spectrum of the trained eigenfunctions", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
