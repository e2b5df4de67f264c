"""torchvision ResNet encoders with the classifier removed."""

from __future__ import annotations

import torch.nn as nn
import torchvision

ARCHS = ("resnet18", "resnet34", "resnet50")


def build_backbone(arch: str, *, small_image_stem: bool = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet with ``zero_init_residual=True`` and ``fc`` replaced by identity.

    Args:
        arch: one of ``resnet18``, ``resnet34``, ``resnet50``.
        small_image_stem: replace the 7x7 stride-2 conv and the max-pool by a 3x3 stride-1 conv
            (the CIFAR stem), so 32-64 px inputs keep enough spatial resolution.

    Returns:
        (module mapping [N,3,H,W] -> [N,F], F) with F = 512 (resnet18/34) or 2048 (resnet50).
        The module stays a torchvision ResNet, so its state dict loads into
        ``torchvision.models.<arch>()`` (with ``strict=False`` for the missing ``fc``).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; accepted: {', '.join(ARCHS)}")
    net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=True)
    if small_image_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim
