"""Exact top-k of long score rows in torch, without a full-width ``torch.topk``.

``torch.topk`` over ``[nq, 250_000]`` scores costs about as much at 128 dimensions as at
2,048: on a GPU the selection, not the matrix product, then sets the search time. The
two-level selection reads every score once (block maxima, a bandwidth-bound reduction) and runs
``topk`` on two short rows instead:

1. split each row into blocks of ``block`` columns; take each block's maximum;
2. keep the ``k`` blocks with the largest maxima; the k-th largest block maximum is a lower
   bound on the k-th largest score (k distinct scores reach it), so every score above that bound
   lies in a kept block;
3. ``topk`` over the ``k * block`` scores of the kept blocks.

The result is the exact top-k, except which of several equal scores fill the last places.
"""

from __future__ import annotations

import math

import torch


def default_block(n_columns: int, k: int) -> int:
    """Block width minimising the two short ``topk`` rows (``n_columns / block`` and ``k * block``)."""
    return max(1, round(math.sqrt(n_columns / max(1, k))))


def topk_rows(scores: torch.Tensor, k: int, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest ``k`` entries of each row, by the two-level selection.

    Args:
        scores: ``[nq, n]`` float tensor (any device; finite values).
        k: entries per row, ``1 <= k``; rows shorter than ``k`` give all their ``n`` entries.
        block: block width (default :func:`default_block`); rows with fewer than ``k`` blocks
            fall back to one ``torch.topk``.

    Returns:
        values ``[nq, min(k, n)]`` (descending) and column indices ``[nq, min(k, n)]`` int64.
    """
    nq, n = scores.shape
    k = min(k, n)
    block = default_block(n, k) if block is None else block
    n_full = n // block
    n_blocks = n_full + (1 if n % block else 0)
    if n_blocks < k or block == 1:
        return torch.topk(scores, k, dim=1)
    maxima = scores[:, : n_full * block].view(nq, n_full, block).amax(dim=2)
    if n_full < n_blocks:
        maxima = torch.cat([maxima, scores[:, n_full * block :].amax(dim=1, keepdim=True)], dim=1)
    kept = torch.topk(maxima, k, dim=1).indices
    offsets = torch.arange(block, device=scores.device)
    columns = (kept[:, :, None] * block + offsets).reshape(nq, k * block)
    outside = columns >= n  # the part of a partial last block past the row's end
    columns = columns.clamp_max(n - 1)
    candidates = scores.gather(1, columns).masked_fill(outside, float("-inf"))
    values, where = torch.topk(candidates, k, dim=1)
    return values, columns.gather(1, where)


def merge_topk(
    values_a: torch.Tensor, ids_a: torch.Tensor, values_b: torch.Tensor, ids_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of the union of two ``[nq, *]`` candidate lists (values, ids), descending."""
    values = torch.cat([values_a, values_b], dim=1)
    ids = torch.cat([ids_a, ids_b], dim=1)
    top, where = torch.topk(values, min(k, values.shape[1]), dim=1)
    return top, ids.gather(1, where)
