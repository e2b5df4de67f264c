"""The colour augmentation as it was before the fused rewrite, kept verbatim (below the line).

Two users: ``tools/bench_augment.py`` times it against the current
:class:`eigenmap.data.augment.BatchAugment`, and ``tests/data/test_data_augment.py`` uses it as
the oracle the current implementation must match (same draws, same outputs up to float
round-off, same generator position). Do not edit the code below: it is the reference.
"""
# ---- verbatim copy of eigenmap/data/augment.py before the rewrite ------------------------------
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "adjust_hue", "rgb_to_gray", "gaussian_kernels"]

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses for tensors
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# columns of the per-view uniform draw, [B, _NUM_DRAWS]
_JITTER, _BRIGHT, _CONTRAST, _SAT, _HUE = 0, 1, 2, 3, 4
_ORDER = slice(5, 9)
_GRAY, _BLUR, _SIGMA, _SOLAR = 9, 10, 11, 12
_NUM_DRAWS = 13


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1, H, W]``."""
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of each image by its own ``shift`` (fraction of a turn).

    Same result as torchvision's ``adjust_hue`` (RGB -> HSV, ``h = (h + shift) mod 1``, back),
    computed without building HSV: a hue rotation keeps each pixel's max and min channel, so
    channel ``n`` is ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``
    and ``n`` = 5, 3, 1 for R, G, B.

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1].
        shift: ``[B]``, in [-0.5, 0.5].

    Returns:
        ``[B, 3, H, W]``.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue6 = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue6 = torch.remainder(hue6 + 6.0 * shift.view(-1, 1, 1), 6.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(hue6 + n, 6.0)
        out.append(maxc - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one per sample.

    Args:
        sigma: ``[B]`` standard deviations in pixels (> 0).
        radius: half width; the kernels have ``2 * radius + 1`` taps.

    Returns:
        ``[B, 2 * radius + 1]``.
    """
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blend_slot(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor, enabled: torch.Tensor) -> torch.Tensor:
    """One jitter slot: per sample brightness (op 0), contrast (1), saturation (2) or nothing.

    ``factors`` ``[B, 3]``; ``op`` ``[B]`` in 0..3 (3 = hue, done elsewhere); ``enabled`` ``[B]``.
    """
    batch = x.shape[0]
    a = factors.gather(1, op.clamp(max=2).view(-1, 1)).view(batch, 1, 1, 1)
    a = torch.where((enabled & (op < 3)).view(batch, 1, 1, 1), a, torch.ones_like(a))
    gray = rgb_to_gray(x)
    op4 = op.view(batch, 1, 1, 1)
    target = torch.where(op4 == 2, gray, torch.where(op4 == 1, gray.mean(dim=(2, 3), keepdim=True),
                                                     torch.zeros_like(gray)))
    return (a * x).add_((1.0 - a) * target).clamp_(0.0, 1.0)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor, order: torch.Tensor,
                  active: torch.Tensor) -> torch.Tensor:
    """Brightness/contrast/saturation/hue in a per-sample order; ``order`` ``[B, 4]`` (3 = hue)."""
    hue_slot = (order == 3).to(torch.int64).argmax(dim=1)
    for k in range(3):  # the cheap steps before each sample's hue step
        x = _blend_slot(x, order[:, k], factors, active & (hue_slot > k))
    x = torch.where(active.view(-1, 1, 1, 1), adjust_hue(x, hue), x)
    for k in range(1, 4):  # and those after it
        x = _blend_slot(x, order[:, k], factors, active & (hue_slot < k))
    return x


def _factor(u: torch.Tensor, strength: float) -> torch.Tensor:
    """Uniform in [max(0, 1 - strength), 1 + strength], torchvision's ColorJitter range."""
    lo = max(0.0, 1.0 - strength)
    return lo + (1.0 + strength - lo) * u


class BatchAugment:
    """Per-sample random colour jitter, grayscale, blur, solarisation and normalisation.

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig` (``resolution``, ``mean``, ``std``,
            ``view1``, ``view2``).
        seed: seeds the generator; the same seed and inputs give identical outputs.
        device: where the generator and the work live (the training device).

    Call with two uint8 ``[B, 3, H, W]`` views (any memory format, ``H = W = resolution``);
    returns two float32 ``[B, 3, H, W]`` channels_last normalised tensors.
    """

    def __init__(self, data_cfg, seed: int, device: Union[str, torch.device] = "cpu"):
        self.device = torch.device(device)
        self.views = (data_cfg.view1, data_cfg.view2)
        self.resolution = data_cfg.resolution
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.mean = torch.tensor(data_cfg.mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(data_cfg.std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self.sigma_scale = self.resolution / 224.0
        # the widest kernel must leave reflect padding possible (radius < side)
        self.blur_radius = tuple(
            max(1, min(math.ceil(3.0 * v.blur_sigma_max * self.sigma_scale), self.resolution - 1))
            for v in self.views
        )

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._augment(view1, 0), self._augment(view2, 1)

    def _augment(self, x_u8: torch.Tensor, view: int) -> torch.Tensor:
        cfg = self.views[view]
        if x_u8.dim() != 4 or x_u8.shape[1] != 3:
            raise ValueError(f"view{view + 1} has shape {tuple(x_u8.shape)}; expected [B, 3, H, W]")
        batch = x_u8.shape[0]
        # one draw of fixed size per view: the generator advances the same whatever happens
        u = torch.rand(batch, _NUM_DRAWS, generator=self.generator, device=self.device)
        x = x_u8.to(self.device, non_blocking=True).to(torch.float32, memory_format=torch.contiguous_format)
        x = x.div_(255.0)

        if cfg.color_jitter_prob > 0:
            active = u[:, _JITTER] < cfg.color_jitter_prob
            factors = torch.stack([_factor(u[:, _BRIGHT], cfg.brightness), _factor(u[:, _CONTRAST], cfg.contrast),
                                   _factor(u[:, _SAT], cfg.saturation)], dim=1)
            hue = cfg.hue * (2.0 * u[:, _HUE] - 1.0)
            order = u[:, _ORDER].argsort(dim=1)  # a uniform random permutation per sample
            x = _color_jitter(x, factors, hue, order, active)
        if cfg.grayscale_prob > 0:
            gray = (u[:, _GRAY] < cfg.grayscale_prob).view(batch, 1, 1, 1)
            x = torch.where(gray, rgb_to_gray(x).expand_as(x), x)
        if cfg.blur_prob > 0:
            x = self._blur(x, u[:, _BLUR] < cfg.blur_prob, u[:, _SIGMA], cfg, view)
        if cfg.solarize_prob > 0:
            solar = (u[:, _SOLAR] < cfg.solarize_prob).view(batch, 1, 1, 1)
            x = torch.where(solar & (x >= cfg.solarize_threshold), 1.0 - x, x)
        x = (x - self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last)

    def _blur(self, x: torch.Tensor, apply: torch.Tensor, u_sigma: torch.Tensor, cfg, view: int) -> torch.Tensor:
        batch, channels, height, width = x.shape
        radius = self.blur_radius[view]
        sigma = (cfg.blur_sigma_min + (cfg.blur_sigma_max - cfg.blur_sigma_min) * u_sigma) * self.sigma_scale
        kernels = gaussian_kernels(sigma, radius)
        # samples without blur get a unit impulse: the same convolution leaves them exact
        delta = torch.zeros_like(kernels)
        delta[:, radius] = 1.0
        kernels = torch.where(apply.view(-1, 1), kernels, delta)
        weight = kernels.repeat_interleave(channels, dim=0)  # [B*C, k], one per plane
        planes = F.pad(x, (radius, radius, radius, radius), mode="reflect").view(
            1, batch * channels, height + 2 * radius, width + 2 * radius)
        planes = F.conv2d(planes, weight.view(batch * channels, 1, 1, -1), groups=batch * channels)
        planes = F.conv2d(planes, weight.view(batch * channels, 1, -1, 1), groups=batch * channels)
        return planes.view(batch, channels, height, width)

    def state_dict(self) -> dict:
        """The generator position (for checkpoints)."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
