"""BatchAugment: torchvision's maths per sample, the recipe's probabilities per view, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from eigenmap.config import DataConfig, ViewAugmentConfig
from eigenmap.data import BatchAugment
from eigenmap.data.augment import _color_jitter

RES = 32
N = 4000  # samples per statistic: the standard error of a proportion is at most 0.008


def _undo(x: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Normalised output back to [0, 1] pixels."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return x * std + mean


def _only(view: ViewAugmentConfig, keep: str, **extra) -> ViewAugmentConfig:
    """``view`` with every random step but ``keep`` switched off (its probability untouched)."""
    probs = {"color_jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0}
    probs.pop(keep)
    return dataclasses.replace(view, **probs, **extra)


def _recipe_with_only(keep: str, **extra) -> DataConfig:
    recipe = DataConfig(resolution=RES)  # the defaults are the paper's recipe
    return dataclasses.replace(recipe, view1=_only(recipe.view1, keep, **extra), view2=_only(recipe.view2, keep, **extra))


def _constant(rgb, n=N) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, RES, RES).contiguous()


def test_recipe_defaults_are_the_papers():
    cfg = DataConfig()
    assert (cfg.view1.blur_prob, cfg.view1.solarize_prob) == (1.0, 0.0)
    assert (cfg.view2.blur_prob, cfg.view2.solarize_prob) == (0.1, 0.2)
    for v in (cfg.view1, cfg.view2):
        assert (v.color_jitter_prob, v.grayscale_prob, v.flip_prob) == (0.8, 0.2, 0.5)
        assert (v.brightness, v.contrast, v.saturation, v.hue) == (0.4, 0.4, 0.2, 0.1)


def test_colour_jitter_equals_torchvision_ops_applied_per_sample_in_its_order():
    g = torch.Generator().manual_seed(0)
    n = 24
    x = torch.rand(n, 3, 12, 10, generator=g)
    factors = 0.6 + 0.8 * torch.rand(n, 3, generator=g)
    hue = 0.2 * torch.rand(n, generator=g) - 0.1
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    active = torch.rand(n, generator=g) < 0.8
    out = _color_jitter(x.clone(), factors, hue, order, active)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(n):
        want = x[i]
        if active[i]:
            for op in order[i].tolist():
                want = TF.adjust_hue(want, hue[i].item()) if op == 3 else ops[op](want, factors[i, op].item())
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)


def test_blur_equals_torchvision_gaussian_blur():
    # sigma 7 px at 224 is 1.0 px at 32: radius 3, a 7-tap kernel
    cfg = _recipe_with_only("blur_prob", blur_sigma_min=7.0, blur_sigma_max=7.0)
    aug = BatchAugment(cfg, seed=0, device="cpu")
    x = torch.randint(0, 256, (4, 3, RES, RES), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = _undo(aug(x, x)[0], cfg)
    want = TF.gaussian_blur(x.float() / 255, kernel_size=[7, 7], sigma=[1.0, 1.0])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_output_is_normalised_float32_channels_last():
    cfg = DataConfig(resolution=RES)
    aug = BatchAugment(cfg, seed=0, device="cpu")
    x = torch.randint(0, 256, (8, 3, RES, RES), dtype=torch.uint8)
    for out in aug(x, x.to(memory_format=torch.channels_last)):
        assert out.dtype == torch.float32 and out.shape == (8, 3, RES, RES)
        assert out.is_contiguous(memory_format=torch.channels_last)
    off = dataclasses.replace(cfg, view1=_only(cfg.view1, "color_jitter_prob", color_jitter_prob=0.0))
    identity = BatchAugment(off, seed=0, device="cpu")(x, x)[0]
    torch.testing.assert_close(_undo(identity, off), x.float() / 255, atol=1e-6, rtol=0)


def test_grayscale_happens_with_probability_about_0_2_on_both_views():
    cfg = _recipe_with_only("grayscale_prob")
    x = _constant((200, 50, 100))
    for out in BatchAugment(cfg, seed=1, device="cpu")(x, x):
        px = _undo(out, cfg)[:, :, 0, 0]
        gray = (px.max(dim=1).values - px.min(dim=1).values) < 1e-4
        assert abs(gray.float().mean().item() - 0.2) < 0.03


def test_solarise_happens_about_0_2_on_view_2_and_never_on_view_1():
    cfg = _recipe_with_only("solarize_prob")
    x = _constant((200, 200, 200))  # above the 0.5 threshold: 200 -> 55
    out1, out2 = BatchAugment(cfg, seed=2, device="cpu")(x, x)
    solar1 = _undo(out1, cfg)[:, 0, 0, 0] < 0.5
    solar2 = _undo(out2, cfg)[:, 0, 0, 0] < 0.5
    assert not solar1.any()
    assert abs(solar2.float().mean().item() - 0.2) < 0.03


def test_blur_is_always_on_view_1_and_about_0_1_on_view_2():
    cfg = _recipe_with_only("blur_prob", blur_sigma_min=5.0, blur_sigma_max=5.0)
    board = (torch.arange(RES).view(-1, 1) + torch.arange(RES).view(1, -1)) % 2 * 255
    x = board.to(torch.uint8).expand(N, 3, RES, RES).contiguous()
    rates = []
    for out in BatchAugment(cfg, seed=3, device="cpu")(x, x):
        changed = (_undo(out, cfg) - x.float() / 255).abs().amax(dim=(1, 2, 3)) > 0.05
        rates.append(changed.float().mean().item())
    assert rates[0] == 1.0
    assert abs(rates[1] - 0.1) < 0.025


def test_colour_jitter_happens_with_probability_about_0_8_on_both_views():
    cfg = _recipe_with_only("color_jitter_prob")
    x = _constant((150, 90, 60))
    for out in BatchAugment(cfg, seed=4, device="cpu")(x, x):
        changed = (_undo(out, cfg)[:, :, 0, 0] - x[:, :, 0, 0].float() / 255).abs().amax(dim=1) > 1e-4
        assert abs(changed.float().mean().item() - 0.8) < 0.03


def test_same_seed_gives_identical_batches_and_state_dict_resumes_exactly():
    cfg = DataConfig(resolution=RES)
    g = torch.Generator().manual_seed(9)
    batches = [torch.randint(0, 256, (16, 3, RES, RES), dtype=torch.uint8, generator=g) for _ in range(3)]
    a, b = BatchAugment(cfg, seed=11, device="cpu"), BatchAugment(cfg, seed=11, device="cpu")
    for x in batches:
        for u, v in zip(a(x, x), b(x, x)):
            assert torch.equal(u, v)
    other = BatchAugment(cfg, seed=12, device="cpu")(batches[0], batches[0])[0]
    assert not torch.equal(other, BatchAugment(cfg, seed=11, device="cpu")(batches[0], batches[0])[0])
    state = a.state_dict()
    expected = a(batches[1], batches[2])
    fresh = BatchAugment(cfg, seed=0, device="cpu")
    fresh.load_state_dict(state)
    for u, v in zip(expected, fresh(batches[1], batches[2])):
        assert torch.equal(u, v)


def test_views_are_augmented_independently():
    cfg = DataConfig(resolution=RES)
    x = _constant((120, 120, 120), n=64)
    out1, out2 = BatchAugment(cfg, seed=0, device="cpu")(x, x)
    assert not torch.equal(out1, out2)
    assert np.isfinite(out1.numpy()).all() and np.isfinite(out2.numpy()).all()
