"""Encoders with the classifier removed: torchvision ResNets (the paper's) or timm models."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn as nn
import torchvision

from eigenmap.timm_models import build_timm_backbone

ARCHS = ("resnet18", "resnet34", "resnet50")


def build_backbone(arch: str, *, small_image_stem: bool = False, timm_kwargs: Optional[dict[str, Any]] = None,
                   grad_checkpointing: bool = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet with ``zero_init_residual=True`` and ``fc`` replaced by identity, or
    for ``timm:NAME`` the timm model (:mod:`eigenmap.timm_models`, with ``timm_kwargs``
    and ``grad_checkpointing``).

    Args:
        arch: one of ``resnet18``, ``resnet34``, ``resnet50``, or ``timm:NAME``.
        small_image_stem: replace the 7x7 stride-2 conv and the max-pool by a 3x3 stride-1 conv
            (the CIFAR stem), so 32-64 px inputs keep enough spatial resolution.

    Returns:
        (module mapping [N,3,H,W] -> [N,F], F) with F = 512 (resnet18/34) or 2048 (resnet50).
        The module stays a torchvision ResNet, so its state dict loads into
        ``torchvision.models.<arch>()`` (with ``strict=False`` for the missing ``fc``).
    """
    if arch.startswith("timm:"):
        return build_timm_backbone(arch[len("timm:"):], timm_kwargs or {}, grad_checkpointing=grad_checkpointing)
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; accepted: {', '.join(ARCHS)}, timm:NAME")
    net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=True)
    if small_image_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim
