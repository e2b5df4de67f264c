"""L2-BatchNorm: batch normalisation, running statistics and inference."""

from __future__ import annotations

import math

import torch

from eigenmap.losses import L2BatchNorm, l2_batchnorm


def test_columns_have_sum_of_squares_2t_over_both_views():
    g = torch.Generator().manual_seed(0)
    psi1, psi2 = torch.randn(32, 6, generator=g, dtype=torch.float64) * 3, torch.randn(32, 6, generator=g, dtype=torch.float64)
    n1, n2 = l2_batchnorm(psi1, psi2, t=10.0)
    sums = n1.pow(2).sum(0) + n2.pow(2).sum(0)
    assert torch.allclose(sums, torch.full((6,), 20.0, dtype=torch.float64))


def test_ema_copies_first_batch_then_moves_with_momentum():
    bn = L2BatchNorm(3, t=10.0, momentum=0.9).double()
    a = torch.ones(4, 3, dtype=torch.float64)
    bn(a, a)  # mean square 1, eigenvalue 1
    assert torch.allclose(bn.norm_sqr, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(bn.eigenvalues, torch.ones(3, dtype=torch.float64))
    bn(2 * a, -2 * a)  # mean square 4, eigenvalue -1
    assert torch.allclose(bn.norm_sqr, torch.full((3,), 0.9 + 0.1 * 4, dtype=torch.float64))
    assert torch.allclose(bn.eigenvalues, torch.full((3,), 0.9 - 0.1, dtype=torch.float64))
    assert int(bn.num_updates) == 2


def test_eval_mode_does_not_update_statistics_and_inference_uses_running_mean_square():
    bn = L2BatchNorm(2).double()
    x = torch.tensor([[2.0, 4.0], [2.0, 4.0]], dtype=torch.float64)
    bn(x, x)
    before = bn.norm_sqr.clone()
    bn.eval()
    bn(10 * x, x)
    assert torch.equal(bn.norm_sqr, before)
    out = bn.inference(x)
    assert torch.allclose(out, torch.ones(2, 2, dtype=torch.float64))
    scaled = bn.inference(x, scale_by_eigenvalue=True)  # eigenvalue 1 here
    assert torch.allclose(scaled, out)


def test_inference_scaling_clamps_negative_eigenvalues_to_zero():
    bn = L2BatchNorm(2).double()
    a = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    bn(a, a * torch.tensor([1.0, -1.0], dtype=torch.float64))
    out = bn.inference(a, scale_by_eigenvalue=True)
    assert out[0, 1].item() == 0.0 and math.isclose(out[0, 0].item(), 1.0)
