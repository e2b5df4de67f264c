"""The NeuralEF eigenfunction loss (Deng, Shi, Zhu, ICML 2022; Neural Eigenmaps, 2022).

With psi1, psi2 the L2-BatchNormed outputs of the two views of a (global) batch [B, k]:
    loss = -2/k * sum_j sum_b psi1_bj psi2_bj
    reg  =  1/k * [ sum_{i<j} ((sg(psi2)^T psi1)_ij)^2 + sum_{i<j} ((sg(psi1)^T psi2)_ij)^2 ]
where sg is stop-gradient in the default variant (it orders the eigenfunctions) and the
identity in the "w/o stop-grad" variant. The objective is loss + alpha * reg. Numbers match the
official implementation to float64 round-off (tests/losses/test_neuralef_reference.py).
"""

from __future__ import annotations

from typing import Optional

import torch

from eigenmap.losses.common import LossTerms, Objective, Weight, gather_pair, weight_at
from eigenmap.losses.l2bn import L2BatchNorm, l2_batchnorm

__all__ = ["neuralef_terms", "neuralef_loss", "NeuralEFLoss"]


def neuralef_terms(psi1: torch.Tensor, psi2: torch.Tensor, *, stop_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and reg on ALREADY L2-BatchNormed outputs.

    Args:
        psi1, psi2: [B, k] normalised outputs of view 1 and view 2.
        stop_grad: detach the left factor of each cross-correlation in reg.

    Returns:
        (loss, reg), 0-dim tensors, each already divided by k.
    """
    k = psi1.shape[1]
    loss = -2.0 * (psi1 * psi2).sum() / k
    left1, left2 = (psi1.detach(), psi2.detach()) if stop_grad else (psi1, psi2)
    cross21 = left2.T @ psi1  # [k, k]: (sg(psi2)^T psi1)_ij
    cross12 = left1.T @ psi2  # [k, k]: (sg(psi1)^T psi2)_ij
    reg = (cross21.triu(1).pow(2).sum() + cross12.triu(1).pow(2).sum()) / k
    return loss, reg


def neuralef_loss(
    psi1: torch.Tensor, psi2: torch.Tensor, *, t: float = 10.0, stop_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeuralEF loss on projector outputs BEFORE L2-BatchNorm (which it applies).

    Args:
        psi1, psi2: [B, k] projector outputs of view 1 and view 2 (the whole global batch).
        t: L2-BatchNorm scale (columns normalised to sum of squares 2t).
        stop_grad: the default stop-grad variant; False = "w/o stop-grad".

    Returns:
        (loss, reg), each divided by k as the official code does; total = loss + alpha * reg.
    """
    n1, n2 = l2_batchnorm(psi1, psi2, t)
    return neuralef_terms(n1, n2, stop_grad=stop_grad)


class NeuralEFLoss(Objective):
    """NeuralEF objective with its L2-BatchNorm running statistics.

    ``forward(z1, z2, step=None)`` takes this worker's projector outputs [B, k] x 2, gathers them
    from all workers when ``gather_distributed`` (autograd-aware; the statistics are then computed
    on the global batch and agree on every worker), applies L2-BatchNorm (updating its running
    mean square and eigenvalue estimates in training mode) and returns loss, reg,
    total = loss + alpha * reg and alpha.

    ``alpha`` is a number, or the reg weight's schedule: a pure function of the global step
    (:class:`eigenmap.train.schedule.AlphaSchedule`, which :func:`eigenmap.losses.build_loss`
    gives it), evaluated at the ``step`` each forward is given.
    """

    def __init__(self, k: int, *, alpha: Weight, t: float = 10.0, stop_grad: bool = True,
                 ema_momentum: float = 0.99, gather_distributed: bool = False):
        super().__init__()
        self.alpha, self.stop_grad, self.gather_distributed = alpha, stop_grad, gather_distributed
        self.l2bn = L2BatchNorm(k, t=t, momentum=ema_momentum)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, step: Optional[int] = None) -> LossTerms:
        if self.gather_distributed:
            z1, z2 = gather_pair(z1, z2)
        psi1, psi2 = self.l2bn(z1, z2)
        loss, reg = neuralef_terms(psi1, psi2, stop_grad=self.stop_grad)
        alpha = weight_at(self.alpha, step)
        # new_full: a fill on the device, no host-to-device copy (which would wait for the stream)
        return LossTerms(total=loss + alpha * reg, loss=loss, reg=reg, alpha=reg.detach().new_full((), alpha))
