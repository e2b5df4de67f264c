"""Matryoshka Representation Learning (Kusupati et al., NeurIPS 2022) with SimCLR's NT-Xent.

MRL trains one k-dim output so that each of its nested prefixes z[:, :m] is a representation by
itself: the loss of the task is applied to every prefix m in a set M and the losses are summed,

    L(z1, z2) = sum_{m in M} c_m * NTXent(z1[:, :m], z2[:, :m]; T),

    NTXent(a, b; T) = 1/(2N) sum_{i=1}^{2N} -log( exp(s_{i,p(i)} / T) / sum_{j != i} exp(s_ij / T) ),

with u = [a; b] the 2N views, s_ij = u_i.u_j / (|u_i| |u_j|) their cosine similarity on the
prefix (each prefix is re-normalised on its own), p(i) the other view of the same image, and
c_m = 1 unless weights are given (the paper's choice). The paper's M is {8, 16, ..., k}; with
one length equal to k this is SimCLR's loss. In the supervised paper each prefix has its own
classifier head; in this self-supervised setting the "head" of a prefix is the cosine
similarity itself, so no parameters are added.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from eigenmap.losses.common import PairLoss
from eigenmap.losses.simclr import nt_xent_loss

__all__ = ["matryoshka_loss", "MatryoshkaLoss"]


def _check(lengths: Sequence[int], weights: Optional[Sequence[float]]) -> None:
    if not lengths or any(m < 1 for m in lengths) or any(a >= b for a, b in zip(lengths, lengths[1:])):
        raise ValueError(f"Matryoshka lengths {list(lengths)}: expected a non-empty, strictly increasing list of "
                         "positive prefix lengths, e.g. [8, 16, 32]")
    if weights is not None and (len(weights) != len(lengths) or any(w <= 0 for w in weights)):
        raise ValueError(f"Matryoshka weights {list(weights)}: expected {len(lengths)} positive numbers, one per "
                         f"length in {list(lengths)} (to drop a length, leave it out of the lengths)")


def matryoshka_loss(z1: torch.Tensor, z2: torch.Tensor, *, lengths: Sequence[int],
                    weights: Optional[Sequence[float]] = None, temperature: float = 0.1) -> torch.Tensor:
    """Weighted sum over nested prefixes of the symmetric NT-Xent loss.

    Args:
        z1, z2: [N, D] projections of two views of N images, D >= max(lengths).
        lengths: strictly increasing prefix lengths m (the set M).
        weights: c_m, one per length; None = 1 each.
        temperature: softmax temperature T of the cosine similarities (every prefix).

    Returns:
        0-dim sum_m c_m * NTXent(z1[:, :m], z2[:, :m]).
    """
    _check(lengths, weights)
    if z1.shape[1] < lengths[-1]:
        raise ValueError(f"Matryoshka length {lengths[-1]} exceeds the {z1.shape[1]} outputs of the projector; "
                         f"accepted lengths: 1 to {z1.shape[1]}")
    weights = [1.0] * len(lengths) if weights is None else weights
    # one NT-Xent per prefix (each re-normalised): at most twice the matmul of the full-length
    # loss for powers of two, small next to the encoder's forward and backward
    return sum(c * nt_xent_loss(z1[:, :m], z2[:, :m], temperature=temperature) for m, c in zip(lengths, weights))


class MatryoshkaLoss(PairLoss):
    """``forward(z1, z2) -> LossTerms`` of :func:`matryoshka_loss` on this worker's [B, D] x 2
    (on the gathered [W*B, D] x 2 when ``gather_distributed``)."""

    def __init__(self, lengths: Sequence[int], *, weights: Optional[Sequence[float]] = None,
                 temperature: float = 0.1, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        _check(lengths, weights)
        self.lengths = tuple(lengths)
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        self.temperature = temperature

    def objective(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return matryoshka_loss(z1, z2, lengths=self.lengths, weights=self.weights, temperature=self.temperature)
