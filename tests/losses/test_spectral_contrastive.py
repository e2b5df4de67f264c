"""Spectral contrastive loss: the authors' norm cap on the projections, and the formula itself."""

from __future__ import annotations

import math

import pytest
import torch

from eigenmap.config import load_config
from eigenmap.losses import build_loss, spectral_contrastive_loss


def _direct(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """The formula term by term in float64: -2/N sum_i z1_i.z2_i + 1/(N(N-1)) sum_{i!=j} (z1_i.z2_j)^2."""
    n = len(z1)
    z1, z2 = z1.double(), z2.double()
    positive = -2.0 * sum(float(z1[i] @ z2[i]) for i in range(n)) / n
    negative = sum(float(z1[i] @ z2[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return positive + negative


def test_rows_inside_the_cap_give_the_plain_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    z1, z2 = 0.9 * z1 / z1.norm(dim=1, keepdim=True), 0.5 * z2 / z2.norm(dim=1, keepdim=True)  # norms < 1
    assert spectral_contrastive_loss(z1, z2).item() == pytest.approx(_direct(z1, z2), rel=1e-5)


def test_projections_beyond_the_cap_are_scaled_onto_its_sphere():
    # unbounded outputs drove the loss to NaN at the recipe's lr; capped, scale no longer pays
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    unit1, unit2 = z1 / z1.norm(dim=1, keepdim=True), z2 / z2.norm(dim=1, keepdim=True)
    for mu in (1.0, 4.0):
        r = math.sqrt(mu)
        expected = _direct(r * unit1, r * unit2)
        assert spectral_contrastive_loss(100 * z1, 100 * z2, mu=mu).item() == pytest.approx(expected, rel=1e-5)


def test_the_cap_passes_gradients_to_capped_rows_and_comes_from_the_config():
    z1 = (10 * torch.randn(5, 3)).requires_grad_()
    z2 = torch.randn(5, 3)
    spectral_contrastive_loss(z1, z2).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    cfg = load_config(None, ["loss.name=spectral_contrastive", "loss.spectral_mu=2.5"])
    assert build_loss(cfg.loss, k=3).mu == 2.5
