"""SimCLR's NT-Xent loss (Chen et al., 2020), on the global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eigenmap.losses.common import PairLoss

__all__ = ["nt_xent_loss", "NTXentLoss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric NT-Xent.

    Args:
        z1, z2: [N, D] projections of two views of N images.
        temperature: softmax temperature of the cosine similarities.

    Returns:
        0-dim mean over the 2N anchors of -log softmax of its positive among the 2N - 1 others.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat((z1, z2)), dim=1)  # [2N, D]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat((torch.arange(n, 2 * n), torch.arange(n))).to(z.device)
    return F.cross_entropy(logits, target)


class NTXentLoss(PairLoss):
    def __init__(self, *, temperature: float = 0.1, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        self.temperature = temperature

    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(z1, z2, temperature=self.temperature)
