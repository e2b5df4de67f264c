"""The assembled model: encoder -> projector -> objective (+ online monitoring classifier)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from eigenmap.config import Config
from eigenmap.losses import EigenStatistics, L2BatchNorm, Objective, build_loss
from eigenmap.models.backbone import build_backbone
from eigenmap.models.online_head import OnlineHead
from eigenmap.models.projector import build_projector
from eigenmap.timm_models import is_convolutional


class EigenmapModel(nn.Module):
    """Encoder (torchvision ResNet or timm model), projector and objective, trained on both views
    in ONE batch.

    ``forward(x, labels)`` is the whole training computation, so a DeepSpeed engine or DDP can
    wrap this module as is. The objective owns the L2-BatchNorm statistics; read them with
    :meth:`statistics` (or use :attr:`l2bn`), never through state-dict keys.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, projector: nn.Module, objective: Objective,
                 num_classes: Optional[int], channels_last: bool = True):
        super().__init__()
        self.backbone, self.feat_dim, self.projector, self.objective = backbone, feat_dim, projector, objective
        # the memory format of the weights and inputs: NHWC pays off for convolutions only
        self.channels_last = channels_last
        # monitoring only: trained on detached features, so it never shapes the encoder
        self.online_head = OnlineHead(feat_dim, num_classes) if num_classes else None

    @property
    def l2bn(self) -> Optional[L2BatchNorm]:
        """The L2-BatchNorm (running mean square, eigenvalues) of a NeuralEF model, else None."""
        return self.objective.l2bn

    def statistics(self) -> Optional[EigenStatistics]:
        """Eigenvalue and mean-square estimates [k] of a NeuralEF model (CPU copies), else None."""
        return self.l2bn.statistics() if self.l2bn is not None else None

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None,
                step: Optional[int] = None) -> dict[str, torch.Tensor]:
        """One training forward.

        Args:
            x: [2B, 3, H, W], view 1 of B images then view 2 of the same images.
            labels: [B] int64 class labels for the online classifier, or None.
            step: the global optimiser step (0-based) this forward belongs to, which the
                objective's scheduled weights are functions of (None: none is scheduled).

        Returns:
            0-dim tensors: "total" (objective + online CE, what to backward), "objective" (what
            shapes the encoder: loss + alpha * reg), "loss", "reg", "alpha" (objectives with a
            reg weight only), "cls_loss" and "acc" (zero without labels or head). No host
            synchronisation.
        """
        feats = self.backbone(x)  # [2B, F]
        z = self.projector(feats)  # [2B, k]
        z1, z2 = z.chunk(2)
        terms = self.objective(z1, z2, step)
        out = {"total": terms.total, "objective": terms.total, "loss": terms.loss, "reg": terms.reg}
        if terms.alpha is not None:
            out["alpha"] = terms.alpha
        if self.online_head is not None and labels is not None:
            logits = self.online_head(feats[: labels.shape[0]].detach())
            out["cls_loss"] = F.cross_entropy(logits, labels)
            out["acc"] = (logits.argmax(1) == labels).float().mean()
            out["total"] = out["total"] + out["cls_loss"]
        else:
            out["cls_loss"] = out["acc"] = terms.total.new_zeros(())
        return out

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> encoder features [N, F] (what the linear probe reads)."""
        return self.backbone(x)

    @torch.no_grad()
    def codes(self, x: torch.Tensor, scale_by_eigenvalue: bool = False) -> torch.Tensor:
        """[N, 3, H, W] -> eigenfunction outputs [N, k], ordered by eigenvalue for NeuralEF.

        Uses the running statistics (call in eval mode); other objectives return the raw
        projector output.
        """
        return self.features_and_codes(x, scale_by_eigenvalue)[1]

    @torch.no_grad()
    def features_and_codes(self, x: torch.Tensor, scale_by_eigenvalue: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3, H, W] -> encoder features [N, F] and codes [N, k] (float32) of one forward.

        The codes are :meth:`codes`' (running statistics: call in eval mode); under autocast the
        features keep its dtype, the codes are normalised in float32.
        """
        feats = self.backbone(x)
        z = self.projector(feats).float()
        return feats, (self.l2bn.inference(z, scale_by_eigenvalue) if self.l2bn is not None else z)


def build_model(cfg: Config) -> EigenmapModel:
    """The model described by ``cfg.model`` and ``cfg.loss`` (a ramped reg weight spans
    ``cfg.derived.total_steps``, the planned run)."""
    m = cfg.model
    backbone, feat_dim = build_backbone(m.arch, small_image_stem=m.small_image_stem, timm_kwargs=m.timm_kwargs,
                                        grad_checkpointing=m.grad_checkpointing)
    projector = build_projector(feat_dim, m.projector_hidden_dim, m.projector_out_dim)
    objective = build_loss(cfg.loss, m.projector_out_dim, total_steps=cfg.derived.total_steps)
    return EigenmapModel(backbone, feat_dim, projector, objective, m.num_classes if m.online_classifier else None,
                         channels_last=m.channels_last and is_convolutional(backbone))
