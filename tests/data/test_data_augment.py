"""BatchAugment: torchvision's maths per sample, the recipe's probabilities per view, seeding,
and equality with the implementation it replaced (``tools/augment_reference.py``, verbatim)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from eigenmap.config import DataConfig, ViewAugmentConfig
from eigenmap.data import BatchAugment
from eigenmap.data.augment import _blur_conv, _blur_taps, _color_jitter, gaussian_kernels
from script_loader import load_script

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


# --------------------------------------------------------------------------------------------
# Equality with the implementation this one replaced: same draws, same outputs up to float
# round-off (after normalisation), same generator position
# --------------------------------------------------------------------------------------------

REFERENCE = Path(__file__).resolve().parents[2] / "tools" / "augment_reference.py"
MAX_DIFF = 1e-5  # after normalisation (x / std multiplies pixel round-off by up to 4.4)


def _reference():
    return load_script("tools/augment_reference.py")


def _recipe(name: str, res: int) -> DataConfig:
    """``paper``: the defaults; ``mixed``: every step at probability 0.5 on both views (blur on
    some samples, off on others, solarised view 1); ``off``: view 1 untouched, view 2 jitter only."""
    cfg = DataConfig(resolution=res)
    if name == "mixed":
        half = dict(color_jitter_prob=0.5, grayscale_prob=0.5, blur_prob=0.5, solarize_prob=0.5)
        return dataclasses.replace(cfg, view1=dataclasses.replace(cfg.view1, **half),
                                   view2=dataclasses.replace(cfg.view2, **half, blur_sigma_max=3.0))
    if name == "off":
        return dataclasses.replace(cfg, view1=_only(cfg.view1, "color_jitter_prob", color_jitter_prob=0.0),
                                   view2=_only(cfg.view2, "color_jitter_prob", color_jitter_prob=1.0))
    return cfg


def _loader_views(batch: int, res: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 views laid out as the FFCV loader hands them out: channels-last strided views
    into one ``[B, 2, H, W, 3]`` buffer."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 2, res, res, 3), dtype=torch.uint8, generator=g)
    return images[:, 0].permute(0, 3, 1, 2), images[:, 1].permute(0, 3, 1, 2)


def _assert_same_as_reference(recipe: str, seed: int, batch: int, res: int, calls: int = 2, **kwargs) -> None:
    cfg = _recipe(recipe, res)
    old = _reference().BatchAugment(cfg, seed=seed, device="cpu")
    new = BatchAugment(cfg, seed=seed, device="cpu", **kwargs)
    for call in range(calls):
        views = _loader_views(batch, res, seed=100 * seed + call)
        for view, (want, got) in enumerate(zip(old(*views), new(*views))):
            assert got.shape == want.shape and got.dtype == torch.float32
            diff = (got - want).abs().max().item()
            assert diff <= MAX_DIFF, f"view {view + 1}, call {call}: max |new - old| = {diff:.2e}"
        assert torch.equal(new.generator.get_state(), old.generator.get_state()), f"generator apart after call {call}"


@pytest.mark.parametrize("recipe,seed,batch,res", [
    ("paper", 0, 1, 32), ("mixed", 1, 16, 32), ("off", 2, 3, 32),
    ("paper", 3, 16, 64), ("mixed", 4, 5, 64), ("off", 5, 1, 64),
    ("paper", 6, 4, 224), ("mixed", 7, 1, 224),
])
def test_equals_the_replaced_implementation(recipe, seed, batch, res):
    _assert_same_as_reference(recipe, seed, batch, res)


def test_equals_the_replaced_implementation_over_many_samples():
    """The largest round-off differences are rare (one ulp of the hue step flipping): look for them
    over 1,500 images per view."""
    _assert_same_as_reference("mixed", seed=8, batch=256, res=32, calls=3)


@pytest.mark.slow
@pytest.mark.parametrize("recipe,batch,res", [("paper", 64, 32), ("mixed", 3, 64)])
def test_compiled_path_equals_the_replaced_implementation(recipe, batch, res):
    """``compile=True`` (the CUDA default), here with the CPU compiler: fused passes, the blur as
    a stencil; each shape compiles once (about a minute on two cores)."""
    _assert_same_as_reference(recipe, seed=9, batch=batch, res=res, compile=True)


def test_blur_stencil_equals_blur_convolution():
    """The compiled path blurs with :func:`_blur_taps`; eagerly it must match the convolution."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 20, 20, generator=g)
    kernels = gaussian_kernels(0.3 + 2.0 * torch.rand(5, generator=g), radius=6)
    kernels[1] = 0.0
    kernels[1, 6] = 1.0  # a unit impulse: blur off
    conv, taps = _blur_conv(x, kernels, 6), _blur_taps(x, kernels, 6)
    torch.testing.assert_close(taps, conv, atol=1e-6, rtol=0)
    torch.testing.assert_close(taps[1], x[1], atol=1e-7, rtol=0)
    assert (conv[0] - x[0]).abs().max() > 0.05  # the others are really blurred


@pytest.mark.parametrize("channels_last", [True, False])
def test_output_memory_format_follows_channels_last(channels_last):
    cfg = DataConfig(resolution=RES)
    views = _loader_views(4, RES, seed=0)
    nchw = BatchAugment(cfg, seed=0, device="cpu", channels_last=False)(*views)
    out = BatchAugment(cfg, seed=0, device="cpu", channels_last=channels_last)(*views)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for got, want in zip(out, nchw):
        assert got.is_contiguous(memory_format=fmt)
        assert torch.equal(got, want)  # the layout changes, not the values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cuda_equals_the_replaced_implementation_without_host_syncs(compile):
    cfg = _recipe("mixed", 64)
    old = _reference().BatchAugment(cfg, seed=3, device="cuda")
    new = BatchAugment(cfg, seed=3, device="cuda", compile=compile)
    views = [v.cuda() for v in _loader_views(32, 64, seed=0)]
    old(*views), new(*views)  # warm-up: compilation, library handles (the generators stay in step)
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        got = new(*views)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for view, (want, out) in enumerate(zip(old(*views), got)):
        diff = (out - want).abs().max().item()
        assert diff <= MAX_DIFF, f"view {view + 1}: max |new - old| = {diff:.2e}"
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(new.generator.get_state(), old.generator.get_state())
