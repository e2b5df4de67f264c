#!/usr/bin/env python
"""Milliseconds per call of BatchAugment, against the implementation it replaced.

One call augments ``--batch`` image pairs (both views) of ``--resolution`` px with the paper's
recipe, from uint8 views laid out as the FFCV loader hands them out (channels-last strided
views into one ``[B, 2, H, W, 3]`` buffer) already on ``--device``. Figures:

- ``ms_per_call``: :class:`~eigenmap.data.augment.BatchAugment` as training gets it on this
  device (compiled on CUDA, eager on the CPU; ``--compile`` overrides), ``old_ms_per_call``:
  ``tools/augment_reference.py`` (the code before the rewrite), ``speedup`` = old / new; also
  ``eager_ms_per_call`` and ``compiled_ms_per_call`` (null when not run) and
  ``compile_seconds`` (the first call of a shape compiles);
- ``stages``: the eager path stage by stage (ms per call, both views): uint8 -> float, colour
  jitter, grayscale, blur, solarise + normalise;
- ``traffic``: kernels and GB of image-sized tensors read and written per eager call, new and
  old (device independent: every eager kernel is one pass over memory);
- ``max_abs_diff``: largest difference from the old implementation's output, same seed and
  inputs, per mode (the tests require <= 1e-5);
- ``overlap`` (``--overlap``): ms per training iteration of a stand-in step (torchvision
  ``--overlap-arch``, both views in one batch, SGD; bf16 autocast on CUDA) with pre-augmented
  inputs, with the augmentation run before each step, and with
  :class:`~eigenmap.data.prefetch.AugmentAhead`; ``hidden`` is the fraction of the serial
  augmentation time that the side stream hides (about 0 on the CPU, which has no stream).

Timing: ``--warmup`` calls, then ``--repeats`` calls each timed alone (with
``torch.cuda.synchronize`` on CUDA); the median is reported.

Run on a GPU: ``python tools/bench_augment.py --device cuda --json augment.json --overlap``
(defaults: 256 pairs at 224 px). On the CPU: ``--device cpu --batch 64``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

import augment_reference  # noqa: E402
from eigenmap.config import DataConfig  # noqa: E402
from eigenmap.data import augment as aug  # noqa: E402
from eigenmap.data.augment import BatchAugment  # noqa: E402
from eigenmap.data.prefetch import AugmentAhead  # noqa: E402

STAGES = ("to_float", "jitter", "grayscale", "blur", "solarise_normalise")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
              repeats: int) -> dict[str, float]:
    """Median wall time in ms of each ``fn()``, each call timed alone after ``warmup`` calls.

    The functions take turns call by call, so a background load that drifts weighs on all alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def loader_views(batch: int, resolution: int, device: torch.device, seed: int = 0):
    """Two uint8 ``[B, 3, R, R]`` views shaped like the FFCV loader's (one ``[B, 2, R, R, 3]`` buffer)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 2, resolution, resolution, 3), dtype=torch.uint8, generator=g).to(device)
    return images[:, 0].permute(0, 3, 1, 2), images[:, 1].permute(0, 3, 1, 2)


def stage_ms(augment: BatchAugment, views, warmup: int, repeats: int) -> dict[str, float]:
    """The eager pipeline of :func:`eigenmap.data.augment._augment_view`, stage by stage, both views.

    Each stage is timed on the previous stage's output; the composed result is checked against
    the real function, so this breakdown cannot drift from what BatchAugment runs.
    """
    device = augment.device
    totals = dict.fromkeys(STAGES, 0.0)
    g = torch.Generator(device=device).manual_seed(1)
    for plan, x_u8 in zip(augment.plans, views):
        u = torch.rand(x_u8.shape[0], aug._NUM_DRAWS, generator=g, device=device)
        threshold = None
        if plan.solarize_prob > 0:
            threshold = torch.where(u[:, aug._SOLAR] < plan.solarize_prob, plan.solarize_threshold,
                                    torch.inf).view(-1, 1, 1, 1)
        steps = {
            "to_float": lambda x: aug._to_unit(x_u8),
            "jitter": (lambda x: aug._color_jitter(x, *aug._jitter_params(u, plan)))
            if plan.color_jitter_prob > 0 else None,
            "grayscale": (lambda x: aug._grayscale(x, u[:, aug._GRAY] < plan.grayscale_prob))
            if plan.grayscale_prob > 0 else None,
            "blur": (lambda x: aug._blur_conv(x, aug._blur_kernels(u, plan), plan.blur_radius))
            if plan.blur_prob > 0 else None,
            "solarise_normalise": lambda x: aug._solarise_normalise(x, threshold, augment._shift, augment._scale,
                                                                    augment.memory_format, fused=False),
        }
        x = None
        for name in STAGES:
            if steps[name] is None:
                continue
            totals[name] += median_ms({name: lambda: steps[name](x)}, device, warmup, repeats)[name]
            x = steps[name](x)
        whole = aug._augment_view(x_u8, u, augment._shift, augment._scale, plan=plan,
                                  memory_format=augment.memory_format, fused=False)
        if not torch.equal(x, whole):
            raise RuntimeError("the stage breakdown no longer matches eigenmap.data.augment._augment_view")
    return totals


class _Traffic(TorchDispatchMode):
    """Counts kernels touching image-sized tensors and the bytes they read and write."""

    def __init__(self, min_numel: int):
        super().__init__()
        self.min_numel, self.kernels, self.bytes = min_numel, 0, 0

    def _size(self, t: torch.Tensor) -> int:
        # a broadcast view reads its storage, not its logical size
        return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._schema.name.split("::")[-1] in _NO_KERNEL:
            return out
        # an in-place op's tensor counts twice (read, then written); an out= tensor is only written
        reads = [t for t in tree_flatten((args, {k: v for k, v in kwargs.items() if k != "out"}))[0]
                 if isinstance(t, torch.Tensor) and t.numel() >= self.min_numel]
        writes = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.numel() >= self.min_numel]
        if reads or writes:
            self.kernels += 1
            self.bytes += sum(self._size(t) for t in reads + writes)
        return out


# metadata-only ops: views and allocations move no data
_NO_KERNEL = {"view", "_unsafe_view", "unbind", "select", "slice", "expand", "alias", "unsqueeze", "squeeze",
             "permute", "as_strided", "detach", "empty", "empty_like", "empty_strided", "t", "transpose", "split"}


def traffic(augment, views) -> dict:
    """Kernels and GB of image-sized tensors (>= one plane per sample) per eager call."""
    batch, _, height, width = views[0].shape
    with _Traffic(batch * height * width) as counter:
        augment(*views)
    return {"kernels": counter.kernels, "gb": counter.bytes / 1e9}


def max_abs_diff(make_new: Callable[[], BatchAugment], cfg: DataConfig, views, device: torch.device) -> float:
    """Largest |new - old| over both views of one call, same seed and inputs."""
    old = augment_reference.BatchAugment(cfg, seed=0, device=device)
    return max((a - b).abs().max().item() for a, b in zip(old(*views), make_new()(*views)))


def overlap(augment: BatchAugment, views, arch: str, steps: int, warmup: int) -> dict:
    """ms per iteration of a stand-in training step: alone, after a serial augmentation, with AugmentAhead."""
    import torchvision

    device = augment.device
    model = getattr(torchvision.models, arch)().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    labels = torch.zeros(views[0].shape[0], dtype=torch.int64, device=device)

    def step(x1, x2):
        with autocast:
            loss = model(torch.cat([x1, x2]).contiguous(memory_format=torch.channels_last)).float().logsumexp(1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    fixed = augment(*views)

    def loop(kind: str) -> float:
        _sync(device)
        start = time.perf_counter()
        if kind == "ahead":
            for x1, x2, _ in AugmentAhead([(*views, labels)] * steps, augment):
                step(x1, x2)
        else:
            for _ in range(steps):
                step(*(augment(*views) if kind == "serial" else fixed))
        _sync(device)
        return 1e3 * (time.perf_counter() - start) / steps

    for kind in ("step", "serial", "ahead"):  # warm-up: cuDNN autotuning, allocator, compilation
        for _ in range(warmup):
            loop(kind)
    figures = {f"{kind}_ms": loop(kind) for kind in ("step", "serial", "ahead")}
    cost = figures["serial_ms"] - figures["step_ms"]
    figures["hidden"] = (figures["serial_ms"] - figures["ahead_ms"]) / cost if cost > 0 else None
    figures.update(arch=arch, steps=steps)
    return figures


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=256, help="image pairs per call")
    parser.add_argument("--resolution", type=int, default=224, help="side of the views, px")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls; the median is reported")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="time the compiled path (auto: on CUDA only; on the CPU it compiles for minutes)")
    parser.add_argument("--overlap", action="store_true", help="also time a stand-in training step with AugmentAhead")
    parser.add_argument("--overlap-arch", default="resnet50", help="torchvision model of the stand-in step")
    parser.add_argument("--overlap-steps", type=int, default=10, help="timed iterations per overlap figure")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    for name in ("batch", "resolution", "repeats", "overlap_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.resolution < 8:
        parser.error(f"--resolution {args.resolution}: must be >= 8 (the config's minimum)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")

    device = torch.device(args.device)
    compiled = device.type == "cuda" if args.compile == "auto" else args.compile == "on"
    cfg = DataConfig(resolution=args.resolution)
    views = loader_views(args.batch, args.resolution, device)
    reps = dict(warmup=args.warmup, repeats=args.repeats)

    old = augment_reference.BatchAugment(cfg, seed=0, device=device)
    eager = BatchAugment(cfg, seed=0, device=device, compile=False)
    figures = {"device": _device_name(device), "batch": args.batch, "resolution": args.resolution,
               "repeats": args.repeats, "mode": "compiled" if compiled else "eager"}
    runs = {"old": lambda: old(*views), "eager": lambda: eager(*views)}
    figures["compile_seconds"] = None
    diffs = {"eager": max_abs_diff(lambda: BatchAugment(cfg, seed=0, device=device, compile=False), cfg, views, device)}
    if compiled:
        fast = BatchAugment(cfg, seed=0, device=device, compile=True)
        start = time.perf_counter()
        fast(*views)
        _sync(device)
        figures["compile_seconds"] = time.perf_counter() - start
        runs["compiled"] = lambda: fast(*views)
        # a fresh instance reuses the compiled code of this shape
        diffs["compiled"] = max_abs_diff(lambda: BatchAugment(cfg, seed=0, device=device, compile=True), cfg, views,
                                         device)
    timed = median_ms(runs, device, **reps)
    figures["old_ms_per_call"], figures["eager_ms_per_call"] = timed["old"], timed["eager"]
    figures["compiled_ms_per_call"] = timed.get("compiled")
    figures["ms_per_call"] = figures["compiled_ms_per_call"] if compiled else figures["eager_ms_per_call"]
    figures["speedup"] = figures["old_ms_per_call"] / figures["ms_per_call"]
    figures["stages"] = stage_ms(eager, views, **reps)
    figures["traffic"] = {"new_eager": traffic(eager, views), "old": traffic(old, views)}
    figures["max_abs_diff"] = diffs
    if args.overlap:
        figures["overlap"] = overlap(fast if compiled else eager, views, args.overlap_arch, args.overlap_steps,
                                     warmup=1)

    _print_table(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def _print_table(f: dict) -> None:
    def ms(v):
        return "-" if v is None else f"{v:9.2f}"

    print(f"BatchAugment, {f['batch']} pairs at {f['resolution']} px on {f['device']} (median of {f['repeats']})")
    print(f"  {'old (reference)':28s}{ms(f['old_ms_per_call'])} ms")
    print(f"  {'new, eager':28s}{ms(f['eager_ms_per_call'])} ms")
    print(f"  {'new, compiled':28s}{ms(f['compiled_ms_per_call'])} ms")
    print(f"  {'speedup (' + f['mode'] + ' / old)':28s}{f['speedup']:9.2f} x")
    print("  eager stages:")
    for name, value in f["stages"].items():
        print(f"    {name:26s}{ms(value)} ms")
    for name, t in f["traffic"].items():
        print(f"  traffic {name:19s}{t['kernels']:6d} kernels {t['gb']:8.2f} GB per call")
    for name, d in f["max_abs_diff"].items():
        print(f"  max |new - old|, {name:10s}{d:10.2e}")
    if "overlap" in f:
        o = f["overlap"]
        hidden = "-" if o["hidden"] is None else f"{100 * o['hidden']:.0f}%"
        print(f"  step ({o['arch']}): alone {o['step_ms']:.2f} ms, augment then step {o['serial_ms']:.2f} ms, "
              f"AugmentAhead {o['ahead_ms']:.2f} ms; hidden {hidden}")


if __name__ == "__main__":
    sys.exit(main())
