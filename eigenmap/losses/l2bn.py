"""L2-BatchNorm: the normalisation that makes the NeuralEF constraint hold on a batch.

Each output column is scaled so that its sum of squares over BOTH views of the global batch is
2t (no mean centring). Running statistics (EMA) give the inference normalisation and the
eigenvalue estimates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

__all__ = ["l2_batchnorm", "batch_statistics", "L2BatchNorm", "EigenStatistics"]


class EigenStatistics(NamedTuple):
    """The running statistics of a trained NeuralEF model (copies, on the CPU).

    ``eigenvalues`` [k]: EMA of mean_b(psi1_bj psi2_bj) / mean square, the eigenvalue estimate of
    output j; ``mean_square`` [k]: EMA of the per-column mean square over both views, the
    inference normalisation; ``num_updates``: EMA updates so far (0 = never trained).
    """

    eigenvalues: torch.Tensor
    mean_square: torch.Tensor
    num_updates: int


def l2_batchnorm(psi1: torch.Tensor, psi2: torch.Tensor, t: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise columns jointly over both views.

    Args:
        psi1, psi2: [B, k] outputs for view 1 and view 2 of the same B images (global batch).
        t: scale; each column of cat(psi1, psi2) ends with sum of squares 2t.

    Returns:
        (psi1 / n * sqrt(2t), psi2 / n * sqrt(2t)), n_j = max(sqrt(sum_b psi1_bj^2 + psi2_bj^2), 1e-6).
        Differentiable through n, as in the official implementation.
    """
    norm = (psi1.pow(2).sum(0) + psi2.pow(2).sum(0)).sqrt().clamp(min=1e-6)
    scale = math.sqrt(2.0 * t)
    return psi1 / norm * scale, psi2 / norm * scale


@torch.no_grad()
def batch_statistics(psi1: torch.Tensor, psi2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean square over the 2B rows and the eigenvalue estimate of one batch.

    Args:
        psi1, psi2: [B, k] un-normalised outputs.

    Returns:
        (mean_sq [k], eigenvalues [k]) with eigenvalue_j = mean_b(psi1_bj psi2_bj) / mean_sq_j.
    """
    if psi1.dtype in (torch.float16, torch.bfloat16):  # statistics in fp32 under autocast
        psi1, psi2 = psi1.float(), psi2.float()
    mean_sq = (psi1.pow(2).sum(0) + psi2.pow(2).sum(0)) / (2 * psi1.shape[0])
    eig = (psi1 * psi2).mean(0) / mean_sq.clamp(min=1e-12)
    return mean_sq, eig


class L2BatchNorm(nn.Module):
    """L2-BatchNorm with running mean square and eigenvalue estimates.

    Training (``forward(psi1, psi2)``): returns :func:`l2_batchnorm` of the pair and updates
    ``norm_sqr`` and ``eigenvalues`` by EMA with ``momentum`` (the first update copies the batch
    estimate). Pass the GLOBAL batch (gathered from all workers) so every worker holds the same
    statistics. Inference (``inference(psi)``): psi / sqrt(norm_sqr), optionally times
    sqrt(max(eigenvalue, 0)).

    Buffers: ``norm_sqr`` [k], ``eigenvalues`` [k], ``num_updates`` [] (int64).
    """

    def __init__(self, k: int, t: float = 10.0, momentum: float = 0.99):
        super().__init__()
        self.k, self.t, self.momentum = k, t, momentum
        self.register_buffer("norm_sqr", torch.ones(k))
        self.register_buffer("eigenvalues", torch.zeros(k))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, psi1: torch.Tensor, psi2: torch.Tensor) -> None:
        """EMA update of the running statistics from one (global) batch [B, k] x 2."""
        mean_sq, eig = batch_statistics(psi1.detach(), psi2.detach())
        # weight of the new estimate: 1 on the first update (a copy), else 1 - momentum;
        # computed on the device so that no step waits for a host read
        weight = torch.where(self.num_updates == 0, 1.0, 1.0 - self.momentum).to(self.norm_sqr.dtype)
        self.norm_sqr.lerp_(mean_sq.to(self.norm_sqr.dtype), weight)
        self.eigenvalues.lerp_(eig.to(self.eigenvalues.dtype), weight)
        self.num_updates += 1

    def forward(self, psi1: torch.Tensor, psi2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, k] x 2 -> normalised [B, k] x 2; updates the statistics in training mode."""
        if self.training:
            self.update(psi1, psi2)
        return l2_batchnorm(psi1, psi2, self.t)

    def inference(self, psi: torch.Tensor, scale_by_eigenvalue: bool = False) -> torch.Tensor:
        """[N, k] -> [N, k] normalised by the running mean square (no batch statistics)."""
        out = psi / self.norm_sqr.clamp(min=1e-12).sqrt()
        if scale_by_eigenvalue:
            out = out * self.eigenvalues.clamp(min=0).sqrt()
        return out

    def statistics(self) -> EigenStatistics:
        """The running statistics as :class:`EigenStatistics` (one host read)."""
        return EigenStatistics(self.eigenvalues.detach().float().cpu().clone(),
                               self.norm_sqr.detach().float().cpu().clone(), int(self.num_updates))

    def extra_repr(self) -> str:
        return f"k={self.k}, t={self.t}, momentum={self.momentum}"
