"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO's eval).

Cosine similarity (rows L2-normalised); each of the k nearest training samples votes for its
class with weight exp(similarity / T). Several k are evaluated from one search.
"""

from __future__ import annotations

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


@torch.no_grad()
def knn_predict(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, *, ks: Sequence[int],
                temperature: float = 0.07, num_classes: int | None = None, chunk_size: int = 1024,
                device: Union[str, torch.device] = "cpu") -> dict[int, torch.Tensor]:
    """Weighted kNN predictions for every k in ``ks``.

    Args:
        train_x: [N, D] training features (the database); train_y: [N] int labels.
        test_x: [Q, D] features to classify.
        ks: neighbour counts, each in [1, N].
        temperature: T in the vote weight exp(cos / T).
        num_classes: C (default: max label + 1).
        chunk_size: test rows per similarity block ([chunk, N] floats in memory).
        device: where the search runs.

    Returns:
        {k: [Q] int64 predicted class}; ties between classes go to the lower class index.

    Raises:
        ValueError: empty sets, mismatched widths or lengths, a k outside [1, N], non-finite
            features.
    """
    device = torch.device(device)
    xb = _as_tensor(train_x, device)
    yb = _as_tensor(train_y, device, torch.int64)
    xq = _as_tensor(test_x, device)
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"kNN needs [N, D] training and [Q, D] test features of one width; got "
                         f"{tuple(xb.shape)} and {tuple(xq.shape)}")
    if len(xb) == 0 or len(xq) == 0:
        raise ValueError(f"kNN needs a non-empty training set and test set; got {len(xb)} and {len(xq)} rows")
    if yb.shape != (len(xb),):
        raise ValueError(f"train_y has shape {tuple(yb.shape)}; expected ({len(xb)},), one label per training row")
    bad = [k for k in ks if not 1 <= k <= len(xb)]
    if bad:
        raise ValueError(f"k = {bad} outside [1, {len(xb)}] (the training set's size)")
    if not (torch.isfinite(xb).all() and torch.isfinite(xq).all()):
        raise ValueError("kNN features hold NaN or inf; accepted: finite values")
    classes = num_classes or int(yb.max()) + 1
    xb, xq = F.normalize(xb, dim=1), F.normalize(xq, dim=1)
    k_max = max(ks)
    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, len(xq), chunk_size):
        sims, idx = (xq[start:start + chunk_size] @ xb.T).topk(k_max, dim=1)  # [q, k_max], best first
        weights = (sims / temperature).exp()
        labels = yb[idx]
        for k in ks:
            votes = torch.zeros(len(idx), classes, device=device)
            votes.scatter_add_(1, labels[:, :k], weights[:, :k])
            out[k].append(votes.argmax(dim=1))
    return {k: torch.cat(v).cpu() for k, v in out.items()}


def knn_top1(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
             ks: Sequence[int] = (20, 200), temperature: float = 0.07, num_classes: int | None = None,
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
                        num_classes=num_classes, device=device)
    truth = _as_tensor(test_y, torch.device("cpu"), torch.int64)
    return {k: 100.0 * float((preds[capped[k]] == truth).float().mean()) for k in ks}
