"""Batched, per-sample random colour augmentations on the training device.

:class:`BatchAugment` takes the two uint8 views the loader cropped and flipped and applies,
per view and per sample, with that view's probabilities from ``data.view1`` / ``data.view2``:

1. colour jitter (probability ``color_jitter_prob``): brightness, contrast, saturation and hue
   factors drawn uniformly as torchvision's ``ColorJitter`` draws them, applied in a random
   order drawn per sample (as torchvision does per image), each step clamped to [0, 1];
2. grayscale (``grayscale_prob``; ITU-R 601 luma, as torchvision);
3. Gaussian blur (``blur_prob``): sigma uniform in ``[blur_sigma_min, blur_sigma_max]`` given at
   224 px and scaled by ``resolution / 224``; kernel radius ``ceil(3 * sigma_max)``, reflect
   padding, separable;
4. solarisation (``solarize_prob``): pixels at or above ``solarize_threshold`` become ``1 - x``;
5. normalisation with ``data.mean`` / ``data.std``; output float32, channels_last (or NCHW).

Every random number comes from one ``torch.Generator`` on the device, seeded once; each call
draws one ``[B, 13]`` uniform block per view whatever the values turn out to be, so a seed fixes
every batch and :meth:`BatchAugment.state_dict` captures the exact position for a checkpoint.
Everything is vectorised over the batch: no Python loop over samples, no host-device
synchronisation (no ``.item()``, ``nonzero`` or boolean-mask indexing: per-sample choices are
``torch.where`` selections and per-sample coefficients).

The random jitter order without a per-sample loop: hue, the one costly step, is computed once
per batch. The three cheap steps all have the form ``clamp(a * x + (1 - a) * t)`` (``t`` = 0,
the mean grey level, or the grey image), so for each of the three slots before and after the
hue slot every sample does *its* cheap step, or the identity (``a = 1``).

Cost. The work is memory-bound: each eager kernel is a pass over memory, and a view
``[256, 3, 224, 224]`` fp32 is 154 MB, so one pass moves 308 MB (read + write). The old code
(kept verbatim in ``tools/augment_reference.py``) ran 284 kernels moving 47 GB per call of 256
pairs at 224 px, four fifths of it in the colour jitter. Here a cheap slot is a grey image,
its mean, two multiply-adds and a clamp (10 kernels, 7 after the hue step where fused
multiply-adds are safe, see :func:`_color_jitter`) instead of 13; hue builds the three
channels together; normalisation writes the output layout directly: 177 kernels, 35 GB
(``tools/bench_augment.py`` counts them).
Fusing further takes a compiler: with ``compile=True`` (the default on CUDA) each view is one
``torch.compile``-d function of the uint8 view and its draws, fused into a few kernels; there
the blur is a stencil of shifted copies (one fused pass per direction), while eagerly it stays
two grouped convolutions (a stencil would be one pass per tap). Samples whose blur is off get
a unit impulse either way: picking the blurred subset exactly needs its size on the host (a
sync), and in the fused stencil an impulse costs no more than the copy it replaces.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Union

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
    """Luma of ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1, H, W]``, rounded as torchvision rounds it."""
    r, g, b = x.unsqueeze(2).unbind(1)
    return (_GRAY_WEIGHTS[0] * r).add_(_GRAY_WEIGHTS[1] * g).add_(_GRAY_WEIGHTS[2] * b)


def _gray_fma(x: torch.Tensor) -> torch.Tensor:
    """:func:`rgb_to_gray` in three plane passes instead of five (fused multiply-adds round once)."""
    r, g, b = x.unsqueeze(2).unbind(1)
    return (_GRAY_WEIGHTS[0] * r).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2])


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
    # elementwise, not torch.aminmax(x, dim=1): a reduction across planes is 5x slower on CPUs
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, 1.0)  # grey pixels: any hue, the result is max
    # hue in sixths of a turn, by which channel is the max (ties: R, then G), in torchvision's
    # order of operations: cheaper rearrangements move the result by ~1e-6, jitter amplifies it
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / safe.unsqueeze(1)).unbind(1)
    hue6 = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue6 = torch.remainder(hue6 + 6.0 * shift.view(-1, 1, 1), 6.0).unsqueeze(1)
    # the three channels at once: k = (n + 6 h) mod 6 for n = 5, 3, 1 (made on the device:
    # torch.tensor would copy from the host and wait for the stream)
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(hue6 + offsets, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)


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


def _blend_slot(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor, enabled: torch.Tensor,
                fma: bool) -> torch.Tensor:
    """One jitter slot: per sample brightness (op 0), contrast (1), saturation (2) or nothing.

    ``x`` ``[B, 3, H, W]``; ``factors`` ``[B, 3]``; ``op`` ``[B]`` in 0..3 (3 = hue, done
    elsewhere); ``enabled`` ``[B]``. Computes ``clamp(a * x + (1 - a) * t)`` as
    ``a * x + (c * grey + d)``: saturation ``c = 1 - a``, contrast ``d = (1 - a) * mean grey``,
    brightness neither; a disabled sample has ``a = 1, c = d = 0`` and stays exactly ``x``.
    ``fma``: fused multiply-adds (fewer passes, one rounding each) instead of torchvision's
    separately rounded products.
    """
    batch = x.shape[0]
    a = factors.gather(1, op.clamp(max=2).view(-1, 1)).view(batch)
    a = torch.where(enabled & (op < 3), a, 1.0)
    gray = _gray_fma(x) if fma else rgb_to_gray(x)
    rest = 1.0 - a
    c = torch.where(op == 2, rest, 0.0).view(batch, 1, 1, 1)
    d = torch.where(op == 1, rest * gray.mean(dim=(1, 2, 3)), 0.0).view(batch, 1, 1, 1)
    target = torch.addcmul(d, gray, c)  # [B, 1, H, W]: (1 - a) * t, one product per sample
    a = a.view(batch, 1, 1, 1)
    x = torch.addcmul(target, x, a) if fma else (a * x).add_(target)
    return x.clamp_(0.0, 1.0)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor, order: torch.Tensor,
                  active: torch.Tensor) -> torch.Tensor:
    """Brightness/contrast/saturation/hue in a per-sample order.

    ``x`` ``[B, 3, H, W]`` in [0, 1]; ``factors`` ``[B, 3]``; ``hue`` ``[B]``; ``order``
    ``[B, 4]`` a permutation of 0..3 per sample (3 = hue); ``active`` ``[B]`` bool.
    """
    hue_slot = (order == 3).to(torch.int64).argmax(dim=1)
    # Before hue, products are rounded as torchvision rounds them: hue computes (n + 6 h) mod 6
    # at magnitudes up to 11, where one ulp is 1e-6, so a one-ulp change of its input can move
    # its output by 1e-6 (and the later steps amplify it); after hue, fused passes are fine.
    for k in range(3):  # the cheap steps before each sample's hue step
        x = _blend_slot(x, order[:, k], factors, active & (hue_slot > k), fma=False)
    # a zero rotation is no exact identity (1e-6, as above): inactive samples keep x itself
    x = torch.where(active.view(-1, 1, 1, 1), adjust_hue(x, hue), x)
    for k in range(1, 4):  # and those after it
        x = _blend_slot(x, order[:, k], factors, active & (hue_slot < k), fma=True)
    return x


def _factor(u: torch.Tensor, strength: float) -> torch.Tensor:
    """Uniform in [max(0, 1 - strength), 1 + strength], torchvision's ColorJitter range."""
    lo = max(0.0, 1.0 - strength)
    return lo + (1.0 + strength - lo) * u


@dataclass(frozen=True)
class _ViewPlan:
    """The static half of one view's augmentation: probabilities, strengths, blur size."""

    color_jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    blur_prob: float
    blur_sigma_min: float  # in pixels at 224 px
    blur_sigma_max: float
    sigma_scale: float  # resolution / 224
    blur_radius: int
    solarize_prob: float
    solarize_threshold: float

    @classmethod
    def of(cls, view_cfg, resolution: int) -> "_ViewPlan":
        scale = resolution / 224.0
        # the widest kernel must leave reflect padding possible (radius < side)
        radius = max(1, min(math.ceil(3.0 * view_cfg.blur_sigma_max * scale), resolution - 1))
        return cls(view_cfg.color_jitter_prob, view_cfg.brightness, view_cfg.contrast, view_cfg.saturation,
                   view_cfg.hue, view_cfg.grayscale_prob, view_cfg.blur_prob, view_cfg.blur_sigma_min,
                   view_cfg.blur_sigma_max, scale, radius, view_cfg.solarize_prob, view_cfg.solarize_threshold)


def _to_unit(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (any strides) -> float32 NCHW in [0, 1], in one pass."""
    out = torch.empty(x_u8.shape, dtype=torch.float32, device=x_u8.device)
    return torch.div(x_u8, 255.0, out=out)


def _jitter_params(u: torch.Tensor, plan: _ViewPlan):
    """Draws ``[B, 13]`` -> ``(factors [B, 3], hue [B], order [B, 4], active [B])``."""
    active = u[:, _JITTER] < plan.color_jitter_prob
    factors = torch.stack([_factor(u[:, _BRIGHT], plan.brightness), _factor(u[:, _CONTRAST], plan.contrast),
                           _factor(u[:, _SAT], plan.saturation)], dim=1)
    hue = plan.hue * (2.0 * u[:, _HUE] - 1.0)
    order = u[:, _ORDER].argsort(dim=1)  # a uniform random permutation per sample
    return factors, hue, order, active


def _grayscale(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, 3, H, W]``; samples with ``apply`` ``[B]`` become their luma on all channels."""
    return torch.where(apply.view(-1, 1, 1, 1), _gray_fma(x), x)


def _blur_kernels(u: torch.Tensor, plan: _ViewPlan) -> torch.Tensor:
    """Draws ``[B, 13]`` -> per-sample 1-D kernels ``[B, 2r + 1]``; a unit impulse where blur is off."""
    apply = u[:, _BLUR] < plan.blur_prob
    sigma = (plan.blur_sigma_min + (plan.blur_sigma_max - plan.blur_sigma_min) * u[:, _SIGMA]) * plan.sigma_scale
    kernels = gaussian_kernels(sigma, plan.blur_radius)
    taps = torch.arange(kernels.shape[1], device=u.device)
    impulse = (taps == plan.blur_radius).to(kernels.dtype)
    # every sample goes through the blur, unblurred ones with the impulse: convolving only
    # x[apply] would need the subset's size on the host, a sync on every call
    return torch.where(apply.view(-1, 1), kernels, impulse)


def _blur_conv(x: torch.Tensor, kernels: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable blur of ``x`` ``[B, C, H, W]`` NCHW with ``kernels`` ``[B, 2r + 1]``, reflect padding.

    Eager path: two depthwise convolutions over the ``B * C`` planes, one kernel each.
    """
    batch, channels, height, width = x.shape
    weight = kernels.repeat_interleave(channels, dim=0)  # [B*C, k], one per plane
    planes = F.pad(x, (radius, radius, radius, radius), mode="reflect").view(
        1, batch * channels, height + 2 * radius, width + 2 * radius)
    planes = F.conv2d(planes, weight.view(batch * channels, 1, 1, -1), groups=batch * channels)
    planes = F.conv2d(planes, weight.view(batch * channels, 1, -1, 1), groups=batch * channels)
    return planes.view(batch, channels, height, width)


def _blur_taps(x: torch.Tensor, kernels: torch.Tensor, radius: int) -> torch.Tensor:
    """The same blur as :func:`_blur_conv`, written as a sum of shifted copies.

    Compiled path: the compiler fuses the padding and the ``2r + 1`` taps of each direction into
    one pass (eagerly this would be one pass per tap).
    """
    height, width = x.shape[-2:]
    taps = kernels.view(kernels.shape[0], 1, 1, 1, -1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = sum(taps[..., j] * padded[..., j:j + width] for j in range(2 * radius + 1))
    return sum(taps[..., j] * rows[..., j:j + height, :] for j in range(2 * radius + 1))


def _solarise_normalise(x: torch.Tensor, threshold: Optional[torch.Tensor], shift: torch.Tensor,
                        scale: torch.Tensor, memory_format: torch.memory_format, fused: bool) -> torch.Tensor:
    """``x`` ``[B, 3, H, W]`` -> ``(where(x >= threshold, 1 - x, x) - mean) / std`` in ``memory_format``.

    ``threshold`` ``[B, 1, 1, 1]`` (``inf`` for samples not solarised) or None; ``shift`` =
    ``-mean / std`` and ``scale`` = ``1 / std``, ``[1, 3, 1, 1]``: one multiply-add that writes
    the output layout directly (eagerly through ``out=``; a compiler fuses the layout change).
    """
    if threshold is not None:
        x = torch.where(x >= threshold, 1.0 - x, x)
    if fused:
        return torch.addcmul(shift, x, scale).contiguous(memory_format=memory_format)
    return torch.addcmul(shift, x, scale, out=torch.empty_like(x, memory_format=memory_format))


def _augment_view(x_u8: torch.Tensor, u: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *,
                  plan: _ViewPlan, memory_format: torch.memory_format, fused: bool) -> torch.Tensor:
    """One view: uint8 ``[B, 3, H, W]`` and its draws ``[B, 13]`` -> float32 ``[B, 3, H, W]``.

    A pure function of its inputs (the draws are made outside), so it can be compiled.
    """
    x = _to_unit(x_u8)
    if plan.color_jitter_prob > 0:
        x = _color_jitter(x, *_jitter_params(u, plan))
    if plan.grayscale_prob > 0:
        x = _grayscale(x, u[:, _GRAY] < plan.grayscale_prob)
    if plan.blur_prob > 0:
        x = (_blur_taps if fused else _blur_conv)(x, _blur_kernels(u, plan), plan.blur_radius)
    threshold = None
    if plan.solarize_prob > 0:
        threshold = torch.where(u[:, _SOLAR] < plan.solarize_prob, plan.solarize_threshold,
                                math.inf).view(-1, 1, 1, 1)
    return _solarise_normalise(x, threshold, shift, scale, memory_format, fused)


class BatchAugment:
    """Per-sample random colour jitter, grayscale, blur, solarisation and normalisation.

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig` (``resolution``, ``mean``, ``std``,
            ``view1``, ``view2``).
        seed: seeds the generator; the same seed and inputs give identical outputs.
        device: where the generator and the work live (the training device).
        channels_last: output memory format: channels_last (True) or contiguous NCHW.
        compile: run each view as one ``torch.compile``-d function (fixed shapes; the first
            call of each batch shape compiles). None: on CUDA only. Compiled and eager outputs
            agree up to float round-off; the draws, and so the augmentations, are the same.

    Call with two uint8 ``[B, 3, H, W]`` views (any memory format, ``H = W = resolution``);
    returns two float32 ``[B, 3, H, W]`` normalised tensors in the chosen memory format.
    """

    def __init__(self, data_cfg, seed: int, device: Union[str, torch.device] = "cpu", channels_last: bool = True,
                 compile: Optional[bool] = None):
        self.device = torch.device(device)
        self.views = (data_cfg.view1, data_cfg.view2)
        self.resolution = data_cfg.resolution
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compiled = self.device.type == "cuda" if compile is None else bool(compile)
        mean = torch.tensor(data_cfg.mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(data_cfg.std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._shift, self._scale = -mean / std, 1.0 / std
        self.plans = tuple(_ViewPlan.of(v, self.resolution) for v in self.views)
        self._view_fns = [functools.partial(_augment_view, plan=plan, memory_format=self.memory_format,
                                            fused=self.compiled) for plan in self.plans]
        if self.compiled:
            self._view_fns = [torch.compile(fn, fullgraph=True, dynamic=False) for fn in self._view_fns]

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._augment(view1, 0), self._augment(view2, 1)

    def _augment(self, x_u8: torch.Tensor, view: int) -> torch.Tensor:
        if x_u8.dim() != 4 or x_u8.shape[1] != 3:
            raise ValueError(f"view{view + 1} has shape {tuple(x_u8.shape)}; expected [B, 3, H, W]")
        # one draw of fixed size per view: the generator advances the same whatever happens
        u = torch.rand(x_u8.shape[0], _NUM_DRAWS, generator=self.generator, device=self.device)
        x_u8 = x_u8.to(self.device, non_blocking=True)
        return self._view_fns[view](x_u8, u, self._shift, self._scale)

    def state_dict(self) -> dict:
        """The generator position (for checkpoints)."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
