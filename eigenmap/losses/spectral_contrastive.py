"""Spectral contrastive loss (HaoChen et al., 2021), on the global batch."""

from __future__ import annotations

import torch

from eigenmap.losses.common import PairLoss

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


class SpectralContrastiveLoss(PairLoss):
    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return spectral_contrastive_loss(z1, z2)
