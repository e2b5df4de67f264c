"""Matryoshka loss: an independent float64 reference, gradients, invariances, its config keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eigenmap.config import ConfigError, LossConfig, from_dict, load_config
from eigenmap.losses import MatryoshkaLoss, build_loss, matryoshka_loss, nt_xent_loss


def _nt_xent_numpy(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    """NT-Xent anchor by anchor: -log of the positive's share of exp(cos / T) among the 2N - 1 others."""
    n = len(a)
    u = np.concatenate([a, b])
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = np.array([u[i] @ u[j] for j in others]) / temperature
        top = logits.max()
        log_denominator = top + np.log(np.exp(logits - top).sum())
        total += log_denominator - (u[i] @ u[positive]) / temperature
    return total / (2 * n)


def _matryoshka_numpy(z1: np.ndarray, z2: np.ndarray, lengths, weights, temperature: float) -> float:
    return sum(c * _nt_xent_numpy(z1[:, :m], z2[:, :m], temperature) for m, c in zip(lengths, weights))


def _views(n: int = 7, k: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, k, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(n, k, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("lengths,weights,temperature", [((2, 4, 8, 12), None, 0.1),
                                                         ((3, 12), (0.25, 2.0), 0.5),
                                                         ((5,), (1.5,), 1.0)])
def test_value_matches_an_independent_float64_reference(lengths, weights, temperature):
    z1, z2 = _views()
    expected = _matryoshka_numpy(z1.numpy(), z2.numpy(), lengths, weights or [1.0] * len(lengths), temperature)
    got = matryoshka_loss(z1, z2, lengths=lengths, weights=weights, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_gradients_pass_gradcheck_in_float64():
    z1, z2 = (z.requires_grad_() for z in _views(n=5, k=9))
    fn = lambda a, b: matryoshka_loss(a, b, lengths=(2, 4, 8), weights=(1.0, 0.5, 2.0), temperature=0.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z1, z2), eps=1e-6, atol=1e-8)


def test_outputs_beyond_the_longest_prefix_get_no_gradient():
    z1, z2 = (z.requires_grad_() for z in _views(k=12))
    matryoshka_loss(z1, z2, lengths=(4, 8)).backward()
    assert z1.grad[:, 8:].abs().max() == 0 and z2.grad[:, 8:].abs().max() == 0
    assert z1.grad[:, :8].abs().min() > 0


def test_one_length_equal_to_k_is_simclr():
    z1, z2 = _views(k=12)
    assert torch.equal(matryoshka_loss(z1, z2, lengths=(12,), temperature=0.2), nt_xent_loss(z1, z2, temperature=0.2))
    simclr = build_loss(LossConfig(name="simclr", temperature=0.2), 12)(z1, z2)
    mrl = build_loss(LossConfig(name="matryoshka", temperature=0.2, matryoshka_lengths=(12,)), 12)(z1, z2)
    assert torch.equal(mrl.total, simclr.total) and mrl.reg.item() == 0.0


def test_the_sum_is_linear_in_the_weights_and_each_prefix_is_renormalised():
    z1, z2 = _views(k=12)
    parts = [nt_xent_loss(z1[:, :m], z2[:, :m]) for m in (3, 12)]
    assert matryoshka_loss(z1, z2, lengths=(3, 12), weights=(2.0, 0.5)).item() == pytest.approx(
        (2.0 * parts[0] + 0.5 * parts[1]).item(), rel=1e-14)
    # scaling the outputs after the first prefix leaves that prefix's term unchanged (it has its own norms)
    scale = torch.ones(12, dtype=torch.float64)
    scale[3:] = 7.0
    assert matryoshka_loss(z1 * scale, z2 * scale, lengths=(3,)).item() == pytest.approx(parts[0].item(), rel=1e-13)
    assert matryoshka_loss(z1 * scale, z2 * scale, lengths=(12,)).item() != pytest.approx(parts[1].item(), rel=1e-3)


def test_it_is_invariant_to_a_positive_scale_of_each_row_and_symmetric_in_the_views():
    z1, z2 = _views(k=12)
    rows = torch.linspace(0.1, 10.0, len(z1), dtype=torch.float64)[:, None]
    base = matryoshka_loss(z1, z2, lengths=(2, 6, 12)).item()
    assert matryoshka_loss(rows * z1, rows.flip(0) * z2, lengths=(2, 6, 12)).item() == pytest.approx(base, rel=1e-12)
    assert matryoshka_loss(z2, z1, lengths=(2, 6, 12)).item() == pytest.approx(base, rel=1e-12)


def test_default_lengths_are_powers_of_two_from_8_and_k():
    cfg = LossConfig(name="matryoshka")
    assert cfg.nested_lengths(512) == (8, 16, 32, 64, 128, 256, 512)
    assert cfg.nested_lengths(100) == (8, 16, 32, 64, 100)
    assert cfg.nested_lengths(8) == (8,) and cfg.nested_lengths(5) == (5,)
    assert build_loss(cfg, 2048).lengths == (8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def test_config_keys_reach_the_loss():
    cfg = load_config(None, ["loss.name=matryoshka", "model.projector_out_dim=64", "loss.temperature=0.2",
                             "loss.matryoshka_lengths=[4, 16, 64]", "loss.matryoshka_weights=[1, 1, 2]"])
    loss = build_loss(cfg.loss, cfg.model.projector_out_dim)
    assert isinstance(loss, MatryoshkaLoss)
    assert (loss.lengths, loss.weights, loss.temperature) == ((4, 16, 64), (1.0, 1.0, 2.0), 0.2)


@pytest.mark.parametrize("keys,message", [
    ({"matryoshka_lengths": [8, 16, 128]}, r"'loss\.matryoshka_lengths': 128 exceeds the k = 64 outputs .*1 to 64"),
    ({"matryoshka_lengths": [16, 8]}, r"\[16, 8\] is not a strictly increasing list of positive lengths"),
    ({"matryoshka_lengths": [0, 8]}, r"\[0, 8\] is not a strictly increasing"),
    ({"matryoshka_lengths": []}, r"'loss\.matryoshka_lengths'.*expected a non-empty list of int or null"),
    ({"matryoshka_weights": [1, 2]}, r"2 weights \[1\.0, 2\.0\] for 4 lengths \[8, 16, 32, 64\]; give one weight per"),
    ({"matryoshka_lengths": [8, 64], "matryoshka_weights": [1, 0]}, r"has a weight <= 0; accepted: positive numbers"),
])
def test_bad_matryoshka_keys_are_refused_with_what_is_accepted(keys, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"model": {"projector_out_dim": 64}, "loss": {"name": "matryoshka", **keys}})


def test_matryoshka_keys_set_for_another_loss_are_refused():
    with pytest.raises(ConfigError, match=r"'loss\.matryoshka_lengths' applies to loss\.name=matryoshka only, not "
                                          r"'simclr'"):
        from_dict({"loss": {"name": "simclr", "matryoshka_lengths": [8, 16]}})


def test_a_length_above_k_is_refused_by_the_builder_and_by_the_function():
    with pytest.raises(ConfigError, match="exceeds the k = 16 outputs"):
        build_loss(LossConfig(name="matryoshka", matryoshka_lengths=(8, 32)), 16)
    z1, z2 = _views(k=12)
    with pytest.raises(ValueError, match="length 16 exceeds the 12 outputs of the projector; accepted lengths: 1 to 12"):
        matryoshka_loss(z1, z2, lengths=(8, 16))
    with pytest.raises(ValueError, match=r"expected 2 positive numbers, one per length in \[4, 8\]"):
        MatryoshkaLoss((4, 8), weights=(1.0,))


def test_it_plugs_into_the_model_and_trains_the_prefixes():
    from eigenmap.models import build_model

    cfg = from_dict({"model": {"arch": "resnet18", "small_image_stem": True, "projector_hidden_dim": 32,
                               "projector_out_dim": 16, "online_classifier": False},
                     "loss": {"name": "matryoshka"}})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.objective.lengths == (8, 16) and model.l2bn is None
    out = model(torch.randn(8, 3, 32, 32))
    out["total"].backward()
    assert torch.isfinite(out["total"]) and out["reg"].item() == 0.0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
