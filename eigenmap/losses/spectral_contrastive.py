"""Spectral contrastive loss (HaoChen et al., 2021), on the global batch.

As in the authors' code, a projection whose norm reaches sqrt(mu) is scaled back onto the sphere
of that radius before the loss (mu = 1 there). The loss is unbounded below in the output scale:
without the cap the positive term rewards ever larger outputs, and at the shared recipe's
learning rate (LARS, base lr 0.3) training reached NaN within 10 steps.
"""

from __future__ import annotations

import math

import torch

from eigenmap.losses.common import PairLoss

__all__ = ["spectral_contrastive_loss", "cap_norm", "SpectralContrastiveLoss"]


def cap_norm(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Rows of ``z`` [N, D] with norm >= sqrt(mu) scaled to norm sqrt(mu); shorter rows unchanged."""
    radius = math.sqrt(mu)
    norm = z.norm(dim=1, keepdim=True)
    return torch.where(norm < radius, z, z * (radius / norm.clamp_min(1e-12)))


def spectral_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, *, mu: float = 1.0) -> torch.Tensor:
    """-2 E[z(x)^T z(x+)] + E[(z(x)^T z(x'))^2], x, x' views of DIFFERENT images, on the
    projections capped at norm sqrt(mu) (:func:`cap_norm`).

    Args:
        z1, z2: [N, D] projections of two views of N images (N >= 2).
        mu: the cap's squared radius (the authors' mu, 1 in their experiments).

    Returns:
        0-dim loss: positives are the N matched rows, negatives the N(N-1) unmatched pairs.
    """
    z1, z2 = cap_norm(z1, mu), cap_norm(z2, mu)
    n = z1.shape[0]
    positive = -2.0 * (z1 * z2).sum(1).mean()
    sim = z1 @ z2.T  # [N, N]
    off = ~torch.eye(n, dtype=torch.bool, device=z1.device)
    return positive + sim.pow(2)[off].mean()


class SpectralContrastiveLoss(PairLoss):
    def __init__(self, *, mu: float = 1.0, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        self.mu = mu

    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return spectral_contrastive_loss(z1, z2, mu=self.mu)
