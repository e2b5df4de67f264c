"""Barlow Twins (Zbontar et al., 2021), on the global batch."""

from __future__ import annotations

import torch

from eigenmap.losses.common import PairLoss

__all__ = ["barlow_twins_loss", "BarlowTwinsLoss"]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, *, lambda_offdiag: float = 0.0051) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 with C the cross-correlation.

    Args:
        z1, z2: [N, D] projections; each column is standardised over the N rows (biased std,
            as BatchNorm1d(affine=False) does in the official code).

    Returns:
        0-dim loss.
    """
    n = z1.shape[0]
    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()
    c = standardise(z1).T @ standardise(z2) / n  # [D, D]
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


class BarlowTwinsLoss(PairLoss):
    def __init__(self, *, lambda_offdiag: float = 0.0051, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        self.lambda_offdiag = lambda_offdiag

    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag)
