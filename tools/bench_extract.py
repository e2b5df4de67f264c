#!/usr/bin/env python
"""Feature extraction against the encoder's forward rate: does the loader keep up?

Two rates, measured in turns in one run (``--rounds`` each, median):

  forward     the model's evaluation forward (encoder + projector + L2-BatchNorm inference) on
              batches already decoded and in memory: the ceiling;
  extraction  ``eigenmap.eval.features.extract_features`` end to end: FFCV decode, resize and
              centre crop, normalisation, the same forward, and the writes into memory-mapped
              ``.npy`` files.

The ratio extraction / forward is what the loader and the writes cost (target >= 0.9 on CPU).
It is given twice: end to end (``ratio``), and from the first batch's arrival on
(``steady_ratio``: every image over the seconds from then to the end). The first batch waits for
FFCV to compile its pipeline (numba, once per dataset file), a fixed start that a large dataset
amortises but that is a sizeable share of a few thousand images; ``first_batch_seconds`` holds
it. Whether the loader keeps up with the forward is ``steady_ratio``.
A third rate, ``loader`` (the evaluation loader alone, no forward), goes with the process CPU
time per image of each of the three passes (all threads; extraction from its first batch on). On a
machine whose cores the forward already fills, the loader's CPU (decode, resize, crop, normalise)
comes out of the same cores, so extraction / forward cannot exceed forward CPU / (forward CPU +
loader CPU) (``shared_cores_bound``); ``contention_cpu_fraction`` is the CPU the extraction spends
beyond those two, over the forward's (near 0 when sharing the cores costs nothing more).
``normalise_ms_per_batch`` times the loader's normalisation of one batch against the plain
per-channel broadcast it replaced (best of 20 interleaved rounds).
Like the ``eigenmap`` command, the benchmark first makes the C allocator reuse freed memory
(:func:`eigenmap.host_memory.keep_freed_memory`; ``keep_freed_memory`` in the JSON);
``page_faults_per_image`` counts the minor page faults of the forward and of the extraction.
``EIGENMAP_KEEP_FREED_MEMORY=0 python tools/bench_extract.py`` measures glibc's defaults.
The model is a freshly initialised one of ``--config`` (weights do not change the speed).

Run: ``python tools/bench_extract.py --json F`` (defaults: ``../shared/data/imagenette2-96/val``,
``configs/imagenette_resnet18.yaml``: ResNet-18, 64 px, all CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def _default_data() -> Path:
    base = Path(os.environ.get("EIGENMAP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return base / "imagenette2-96" / "val"


def usage() -> tuple[float, float, int]:
    """This process now: (wall seconds, CPU seconds of all threads, minor page faults so far)."""
    return time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def per_image(before: tuple[float, float, int], n: int) -> tuple[float, float, float]:
    """Since ``before`` (a :func:`usage`), over ``n`` images: images/s, CPU seconds per image and
    minor page faults per image."""
    wall, cpu, faults = (now - then for now, then in zip(usage(), before))
    return n / wall, cpu / n, faults / n


def forward_rate(model, batches: list[torch.Tensor]) -> tuple[float, float, float]:
    """:func:`per_image` figures of the evaluation forward over decoded batches held in memory."""
    n = sum(len(b) for b in batches)
    with torch.no_grad():
        model.codes(batches[0])  # warm-up: oneDNN picks its kernels
        before = usage()
        for x in batches:
            model.codes(x)
    return per_image(before, n)


def loader_rate(loader) -> tuple[float, float, float]:
    """:func:`per_image` figures of the evaluation loader alone (decode, resize, crop,
    normalise; no forward)."""
    n, before = 0, usage()
    for x, _ in loader:
        n += len(x)
    return per_image(before, n)


def normalise_ms(side: int, batch_size: int, mean, std, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per batch of the evaluation loader's normalisation (``normalise_uint8``)
    against the plain per-channel broadcast (``[1, 3, 1, 1]`` mean and std against channels_last
    uint8, as the loader did before), on random uint8 images; best of ``repeats`` interleaved rounds."""
    from eigenmap.data.ffcv_loaders import normalisation_rows, normalise_uint8
    from retrieval.timing import time_interleaved

    images = torch.randint(0, 256, (batch_size, side, side, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    rows = normalisation_rows(mean, std, side)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    ways = {"flat_rows": lambda: normalise_uint8(images, *rows),
            "per_channel_broadcast": lambda: images.float().sub_(m).div_(s)}
    timed = time_interleaved(ways, repeats=repeats)
    return {name: 1000 * t["best_seconds"] for name, t in timed.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=_default_data(), help="ImageFolder or .beton (default: Imagenette val)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "imagenette_resnet18.yaml")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--loader-workers", type=int, default=1, help="FFCV decoding threads (data.loader_workers)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-images", type=int, default=None, help="use the first N images of --data only")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if not args.data.exists():
        p.error(f"--data '{args.data}' does not exist; pass an ImageFolder tree or a .beton")

    from eigenmap.config import load_config
    from eigenmap.data import build_eval_loader, write_beton
    from eigenmap.eval.features import extract_features
    from eigenmap.host_memory import keep_freed_memory
    from eigenmap.models import build_model

    reuse = keep_freed_memory()  # as the eigenmap command does: forward and extraction alike
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.loader_workers={args.loader_workers}"])
    with tempfile.TemporaryDirectory(prefix="bench_extract-") as tmp:
        tmp = Path(tmp)
        beton = args.data
        if args.data.is_dir():
            beton = tmp / "data.beton"
            write_beton(args.data, beton, workers=os.cpu_count() or 1)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        if cfg.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        weights = tmp / "model.pt"
        torch.save(model.state_dict(), weights)
        loader = build_eval_loader(cfg.data, beton, batch_size=args.batch_size)
        batches = [x.clone() for x, _ in loader]
        if args.max_images:
            batches = [b for i, b in enumerate(batches) if i * args.batch_size < args.max_images]
        images = sum(len(b) for b in batches)
        rates: dict[str, list[float]] = {"forward": [], "extraction": [], "steady": [], "loader": []}
        cpu_ms: dict[str, list[float]] = {"forward": [], "extraction": [], "loader": []}  # per image
        faults: dict[str, list[float]] = {"forward": [], "extraction": []}  # minor page faults per image
        first_batch: list[float] = []
        for r in range(args.rounds):
            for name, (rate, cpu, page_faults) in (("loader", loader_rate(loader)),
                                                   ("forward", forward_rate(model, batches))):
                rates[name].append(rate)
                cpu_ms[name].append(1000 * cpu)
                if name in faults:
                    faults[name].append(page_faults)
            before = usage()
            arrays = extract_features(model, cfg, beton, tmp / f"features{r}", weights=weights, step=None,
                                      batch_size=args.batch_size, progress=False)
            faults["extraction"].append(per_image(before, arrays.meta["dataset"]["num_images"])[2])
            cpu_ms["extraction"].append(arrays.meta["steady_cpu_ms_per_image"])
            rates["extraction"].append(arrays.meta["images_per_second"])
            rates["steady"].append(arrays.meta["steady_images_per_second"])
            first_batch.append(arrays.meta["first_batch_seconds"])
            print(f"round {r + 1}: forward {rates['forward'][-1]:.0f} images/s, extraction "
                  f"{rates['extraction'][-1]:.0f} images/s ({rates['steady'][-1]:.0f} after a first batch of "
                  f"{first_batch[-1]:.2f} s), loader alone {rates['loader'][-1]:.0f} images/s; CPU ms per image: "
                  + ", ".join(f"{name} {v[-1]:.2f}" for name, v in cpu_ms.items())
                  + f"; page faults per image: forward {faults['forward'][-1]:.0f}, extraction "
                  f"{faults['extraction'][-1]:.0f}", flush=True)
    normalise = normalise_ms(cfg.data.resolution, args.batch_size, cfg.data.mean, cfg.data.std)
    ratios = [e / f for e, f in zip(rates["extraction"], rates["forward"])]
    cpu = {name: statistics.median(v) for name, v in cpu_ms.items()}
    steady = [e / f for e, f in zip(rates["steady"], rates["forward"])]
    figures = {
        "data": str(args.data), "config": str(args.config), "arch": cfg.model.arch, "resolution": cfg.data.resolution,
        "batch_size": args.batch_size, "threads": args.threads, "loader_workers": args.loader_workers,
        "images_forward": images, "device": "cpu", "torch": torch.__version__,
        "forward_images_per_second": rates["forward"], "extraction_images_per_second": rates["extraction"],
        "loader_images_per_second": rates["loader"],
        "steady_images_per_second": rates["steady"], "first_batch_seconds": first_batch,
        "ratio_per_round": ratios, "ratio": statistics.median(ratios),
        "steady_ratio_per_round": steady, "steady_ratio": statistics.median(steady),
        "cpu_ms_per_image": cpu_ms, "cpu_ms_per_image_median": cpu,
        "shared_cores_bound": cpu["forward"] / (cpu["forward"] + cpu["loader"]),
        "contention_cpu_fraction": (cpu["extraction"] - cpu["forward"] - cpu["loader"]) / cpu["forward"],
        "normalise_ms_per_batch": normalise,
        "keep_freed_memory": reuse, "page_faults_per_image": faults,
    }
    print(f"extraction / forward: {figures['ratio']:.3f} end to end, {figures['steady_ratio']:.3f} after the first "
          f"batch (medians of {args.rounds} rounds: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"{', '.join(f'{r:.3f}' for r in steady)}); with the loader's CPU taken from the forward's cores it "
          f"could reach {figures['shared_cores_bound']:.3f}; CPU beyond forward + loader: "
          f"{100 * figures['contention_cpu_fraction']:+.1f}% of the forward's; normalising a batch: "
          f"{normalise['flat_rows']:.1f} ms (per-channel broadcast: {normalise['per_channel_broadcast']:.1f} ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
