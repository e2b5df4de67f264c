"""What every loss module shares: its return type, the objective base classes, the paired gather."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn as nn

from eigenmap import dist
from eigenmap.losses.l2bn import L2BatchNorm


class LossTerms(NamedTuple):
    """0-dim tensors: ``total`` is what to minimise (the objective); ``loss`` and ``reg`` are its
    parts (``reg`` is zero for objectives without one); ``alpha``, the weight of ``reg`` at this
    step, for objectives that have one (logged with the others), else None."""

    total: torch.Tensor
    loss: torch.Tensor
    reg: torch.Tensor
    alpha: Optional[torch.Tensor] = None


# a weight that is a number, or a pure function of the global optimiser step (a schedule)
Weight = Union[float, Callable[[Optional[int]], float]]


def weight_at(weight: Weight, step: Optional[int]) -> float:
    """The value of ``weight`` at ``step`` (a number is its own value at every step)."""
    return float(weight(step)) if callable(weight) else float(weight)


def gather_pair(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views [B, k] from every worker -> [W*B, k] x 2, in ONE autograd-aware collective."""
    both = dist.gather(torch.stack((z1, z2), dim=1))  # [W*B, 2, k]
    return both[:, 0], both[:, 1]


class Objective(nn.Module):
    """Base of every training objective: ``forward(z1, z2, step=None) -> LossTerms`` on [B, k] x 2;
    ``step`` (the global optimiser step, 0-based) is what a scheduled weight is a function of.

    ``l2bn`` is the objective's L2-BatchNorm (running eigenvalue and mean-square estimates) for
    eigenfunction objectives, None for the others: the one typed place where a model's running
    statistics live.
    """

    def __init__(self) -> None:
        super().__init__()
        self.l2bn: Optional[L2BatchNorm] = None

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, step: Optional[int] = None) -> LossTerms:
        raise NotImplementedError


class PairLoss(Objective):
    """A loss without a regulariser on two views: subclasses define ``objective(z1, z2)``.

    ``forward(z1, z2, step=None)`` takes this worker's [B, D] x 2, gathers them from all workers
    first when ``gather_distributed``, and returns :class:`LossTerms` with ``reg`` zero (no
    schedule: ``step`` is not used).
    """

    def __init__(self, *, gather_distributed: bool = False):
        super().__init__()
        self.gather_distributed = gather_distributed

    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, step: Optional[int] = None) -> LossTerms:
        if self.gather_distributed:
            z1, z2 = gather_pair(z1, z2)
        loss = self.objective(z1, z2)
        return LossTerms(total=loss, loss=loss, reg=loss.new_zeros(()))
