"""Spectral contrastive loss (HaoChen et al., 2021), on the global batch."""

from __future__ import annotations

import torch
import torch.nn as nn

from eigenmap.losses.common import LossTerms, gather_pair, no_reg

__all__ = ["spectral_contrastive_loss", "SpectralContrastiveLoss"]


def spectral_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """-2 E[z(x)^T z(x+)] + E[(z(x)^T z(x'))^2], x, x' views of DIFFERENT images.

    Args:
        z1, z2: [N, D] projections of two views of N images (N >= 2).

    Returns:
        0-dim loss: positives are the N matched rows, negatives the N(N-1) unmatched pairs.
    """
    n = z1.shape[0]
    positive = -2.0 * (z1 * z2).sum(1).mean()
    sim = z1 @ z2.T  # [N, N]
    off = ~torch.eye(n, dtype=torch.bool, device=z1.device)
    return positive + sim.pow(2)[off].mean()


class SpectralContrastiveLoss(nn.Module):
    def __init__(self, *, gather_distributed: bool = False):
        super().__init__()
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossTerms:
        if self.gather_distributed:
            z1, z2 = gather_pair(z1, z2)
        loss = spectral_contrastive_loss(z1, z2)
        return LossTerms(total=loss, loss=loss, reg=no_reg(loss))
