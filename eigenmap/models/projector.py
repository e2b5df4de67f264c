"""The projector of the paper: Linear(F->d, no bias) -> BatchNorm1d -> ReLU -> Linear(d->k)."""

from __future__ import annotations

import torch.nn as nn


def build_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    """Maps encoder features [N, in_dim] to k = out_dim eigenfunction outputs [N, out_dim].

    ``hidden_dim = 0`` gives a single ``Linear(in_dim, out_dim)`` (bias on), the paper's
    no-hidden-layer ablation.
    """
    if hidden_dim == 0:
        return nn.Linear(in_dim, out_dim, bias=True)
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim, bias=True),
    )
