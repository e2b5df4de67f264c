"""What every loss module shares: its return type and the paired gather."""

from __future__ import annotations

from typing import NamedTuple

import torch

from eigenmap import dist


class LossTerms(NamedTuple):
    """0-dim tensors: ``total`` is what to minimise; ``loss`` and ``reg`` are its parts
    (``reg`` is zero for objectives without one)."""

    total: torch.Tensor
    loss: torch.Tensor
    reg: torch.Tensor


def gather_pair(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views [B, k] from every worker -> [W*B, k] x 2, in ONE autograd-aware collective."""
    both = dist.gather(torch.stack((z1, z2), dim=1))  # [W*B, 2, k]
    return both[:, 0], both[:, 1]


def no_reg(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())
