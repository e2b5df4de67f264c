"""Self-supervised objectives: NeuralEF and the baselines it is compared with, Matryoshka among them.

Each loss is a pure function plus a thin :class:`Objective` module returning :class:`LossTerms`;
modules gather the outputs of all workers only when built with ``gather_distributed=True``.
L2-BatchNorm (``l2bn``) lives here because the NeuralEF objective applies it, on the gathered
outputs, and owns its running statistics. Losses never import ``eigenmap.models``.
"""

from __future__ import annotations

from typing import Optional

from eigenmap.config import LossConfig
from eigenmap.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from eigenmap.losses.common import LossTerms, Objective, gather_pair
from eigenmap.losses.l2bn import EigenStatistics, L2BatchNorm, batch_statistics, l2_batchnorm
from eigenmap.losses.matryoshka import MatryoshkaLoss, matryoshka_loss
from eigenmap.losses.neuralef import NeuralEFLoss, neuralef_loss, neuralef_terms
from eigenmap.losses.simclr import NTXentLoss, nt_xent_loss
from eigenmap.losses.spectral_contrastive import SpectralContrastiveLoss, spectral_contrastive_loss
from eigenmap.train.schedule import AlphaSchedule

__all__ = [
    "LossTerms", "Objective", "gather_pair", "build_loss",
    "L2BatchNorm", "EigenStatistics", "l2_batchnorm", "batch_statistics",
    "neuralef_loss", "neuralef_terms", "NeuralEFLoss",
    "nt_xent_loss", "NTXentLoss",
    "barlow_twins_loss", "BarlowTwinsLoss",
    "spectral_contrastive_loss", "SpectralContrastiveLoss",
    "matryoshka_loss", "MatryoshkaLoss",
]

# each builder: (loss config, k, alpha schedule) -> Objective
_BUILDERS = {
    "neuralef": lambda c, k, alpha: NeuralEFLoss(
        k, alpha=alpha, t=c.t, stop_grad=c.stop_grad, ema_momentum=c.ema_momentum,
        gather_distributed=c.gather_distributed),
    "simclr": lambda c, k, alpha: NTXentLoss(temperature=c.temperature, gather_distributed=c.gather_distributed),
    "barlow_twins": lambda c, k, alpha: BarlowTwinsLoss(
        lambda_offdiag=c.barlow_lambda, gather_distributed=c.gather_distributed),
    "spectral_contrastive": lambda c, k, alpha: SpectralContrastiveLoss(mu=c.spectral_mu,
                                                                      gather_distributed=c.gather_distributed),
    "matryoshka": lambda c, k, alpha: MatryoshkaLoss(
        c.nested_lengths(k), weights=c.matryoshka_weights, temperature=c.temperature,
        gather_distributed=c.gather_distributed),
}


def build_loss(cfg: LossConfig, k: int, *, total_steps: Optional[int] = None) -> Objective:
    """The objective named by ``cfg.name`` for k-dim outputs; ``forward(z1, z2, step) -> LossTerms``.

    ``total_steps``: the planned run (``derived.total_steps``), which a ramped reg weight
    (``loss.alpha_final``) spans; a constant one needs no plan.

    Raises:
        ValueError: an unknown name; ConfigError: loss keys that do not fit k (e.g. a Matryoshka
            length above k), for a LossConfig built without the whole Config's checks.
    """
    if cfg.name not in _BUILDERS:
        raise ValueError(f"unknown loss {cfg.name!r}; accepted: {', '.join(_BUILDERS)}")
    cfg.check_matryoshka(k)
    return _BUILDERS[cfg.name](cfg, k, AlphaSchedule.of(cfg, total_steps))
