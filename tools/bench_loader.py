#!/usr/bin/env python
"""Image PAIRS per second: the FFCV two-view loader against its torchvision twin.

Both pipelines read the same images (the ``.beton`` is written from ``--data`` unless
``--beton`` is given, and the twin leaves out the files its manifest lists as skipped), cut the
same two-view random-resized crops with flips at the same resolution, with the same number of
CPU workers (FFCV: numba threads; torchvision: DataLoader processes) and batch size, and go
through the same shard order. Optionally (``--augment``) both feed the same
:class:`~eigenmap.data.augment.BatchAugment` on ``--device``.

Measurement: after a warm-up (FFCV's numba compilation, the twin's worker start-up), the two
pipelines take turns, one full epoch each per round, ``--rounds`` times; each epoch is timed
from the creation of its iterator to its last batch. Rates are pairs per second; the ratio is
the median FFCV rate over the median twin rate. Turns make the ratio fair on a shared machine
whose background load drifts. Pairs per CPU-second (user + system time of this process's
threads and its worker processes) is the per-core efficiency, the least sensitive figure to
other load on the machine. Peak memory is the peak proportional set size (PSS: shared pages
split between the processes sharing them) of this process and its children, sampled every
50 ms, separately for each pipeline's turns.

Run: ``python tools/bench_loader.py --json bench.json`` (defaults: ``../shared/data/
imagenette2-96/train``, 64 px, batch 256, 2 workers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "tools"):  # the package, and twin.py beside this script
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

logger = logging.getLogger("bench_loader")


def _default_data() -> Path:
    shared = os.environ.get("EIGENMAP_SHARED_DATA")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared" / "data"
    return base / "imagenette2-96" / "train"


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


class PeakMemory:
    """Samples the PSS of this process tree in a thread; ``peak_bytes`` since the last reset."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.available = os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        """Take one sample now (also done by the thread); returns the peak so far."""
        if self.available:
            total = sum(_pss_bytes(p) for p in _descendants(os.getpid()))
            self.peak_bytes = max(self.peak_bytes, total)
        return self.peak_bytes

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> "PeakMemory":
        if self.available:
            self._thread.start()
        return self

    def reset(self) -> None:
        self.peak_bytes = 0
        self.sample()

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def _time_epoch(make_iter, augment=None) -> tuple[int, float, float]:
    """(pairs, seconds, CPU seconds) of one full epoch, from iterator creation to the last batch."""
    cpu_start = _tree_cpu_seconds()
    start = time.perf_counter()
    pairs = 0
    sink = None
    for view1, view2, labels in make_iter():
        if augment is not None:
            x1, x2 = augment(view1, view2)
            # depend on both outputs without a device sync per batch; one sync at the end
            touched = x1[0, 0, 0, 0] + x2[0, 0, 0, 0]
            sink = touched if sink is None else sink + touched
        pairs += view1.shape[0]
    if sink is not None:
        float(sink)
    return pairs, time.perf_counter() - start, _tree_cpu_seconds() - cpu_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=_default_data(), help="ImageFolder root (default: %(default)s)")
    parser.add_argument("--beton", type=Path, default=None,
                        help="an existing .beton written from --data (default: write one to a temporary folder)")
    parser.add_argument("--resolution", type=int, default=64, help="output side of both views, px (default: 64)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per batch (default: 256)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="CPU workers of each pipeline (default: all CPUs)")
    parser.add_argument("--write-mode", choices=("jpg", "raw"), default="jpg",
                        help="how the written .beton stores images (default: jpg)")
    parser.add_argument("--os-cache", action=argparse.BooleanOptionalAction, default=True,
                        help="FFCV reads the file through the OS page cache (default: on)")
    parser.add_argument("--rounds", type=int, default=3, help="epochs of each pipeline, taken in turns (default: 3)")
    parser.add_argument("--augment", action="store_true",
                        help="also run BatchAugment on --device inside the timed loop (both pipelines)")
    parser.add_argument("--device", default="cpu", help="device of --augment (default: cpu)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    for name in ("resolution", "batch_size", "workers", "rounds"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} {getattr(args, name)} must be >= 1", file=sys.stderr)
            return 2
    if not args.data.is_dir():
        print(f"error: --data '{args.data}' is not a folder; pass an ImageFolder root "
              f"(the default is ../shared/data/imagenette2-96/train beside the checkout)", file=sys.stderr)
        return 2

    import torch

    from eigenmap.config import DataConfig
    from eigenmap.data import BatchAugment, build_train_loader, read_manifest, write_beton
    from twin import TwoViewFolder, build_twin_train_loader

    threads = min(args.workers, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    memory = PeakMemory().start()
    baseline_bytes = memory.sample()
    figures: dict = {"data": str(args.data), "resolution": args.resolution, "batch_size": args.batch_size,
                     "workers": args.workers, "rounds": args.rounds, "write_mode": args.write_mode,
                     "os_cache": args.os_cache, "augment": args.augment, "device": args.device,
                     "cpu_count": os.cpu_count(), "torch": torch.__version__,
                     "baseline_memory_mib": round(baseline_bytes / 2**20, 1) if memory.available else None}

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        beton = args.beton
        if beton is None:
            beton = Path(tmp) / "bench.beton"
            memory.reset()
            t0 = time.perf_counter()
            manifest = write_beton(args.data, beton, workers=args.workers, write_mode=args.write_mode)
            write_s = time.perf_counter() - t0
            memory.sample()
            figures.update(write_seconds=round(write_s, 2), write_images=manifest["num_images"],
                           write_images_per_second=round(manifest["num_images"] / write_s, 1),
                           write_peak_memory_mib=round(memory.peak_bytes / 2**20, 1) if memory.available else None,
                           beton_mib=round(beton.stat().st_size / 2**20, 1))
            logger.info("wrote %d images in %.1f s", manifest["num_images"], write_s)
        else:
            manifest = read_manifest(beton)

        cfg = DataConfig(resolution=args.resolution, eval_resize=max(args.resolution, 8),
                         batch_size_per_worker=args.batch_size, loader_workers=args.workers, os_cache=args.os_cache)
        device = torch.device(args.device)
        augment = BatchAugment(cfg, seed=0, device=device) if args.augment else None

        ffcv = build_train_loader(cfg, beton, rank=0, world_size=1, seed=0, device=device)
        twin_ds = TwoViewFolder(cfg, args.data, exclude=[s["path"] for s in manifest["skipped"]])
        if len(twin_ds) != ffcv.num_samples:
            print(f"error: '{beton}' holds {ffcv.num_samples} images but '{args.data}' has {len(twin_ds)} good ones; "
                  f"pass a .beton written from --data", file=sys.stderr)
            return 2
        twin = build_twin_train_loader(cfg, args.data, rank=0, world_size=1, seed=0, epoch=0,
                                       num_workers=args.workers, dataset=twin_ds, persistent_workers=True)

        def epoch_of(loader, epoch: int):
            def make():
                loader.set_epoch(epoch)
                return iter(loader)
            return make

        # warm-up: the twin first, so that its persistent workers are forked before FFCV's
        # numba threads exist; then FFCV's numba compilation
        logger.info("warm-up")
        for name, loader in (("twin", twin), ("ffcv", ffcv)):
            t0 = time.perf_counter()
            for n, _ in enumerate(epoch_of(loader, 0)()):
                if n == 2:
                    break
            figures[f"{name}_warmup_seconds"] = round(time.perf_counter() - t0, 2)

        rates = {"ffcv": [], "twin": []}
        per_cpu = {"ffcv": [], "twin": []}
        peaks = {"ffcv": 0, "twin": 0}
        for r in range(args.rounds):
            for name, loader in (("ffcv", ffcv), ("twin", twin)):
                memory.reset()
                pairs, seconds, cpu_seconds = _time_epoch(epoch_of(loader, r + 1), augment)
                rates[name].append(pairs / seconds)
                per_cpu[name].append(pairs / cpu_seconds if cpu_seconds > 0 else float("nan"))
                peaks[name] = max(peaks[name], memory.sample())
                logger.info("round %d %s: %d pairs in %.2f s = %.0f pairs/s (%.0f per CPU-second)", r + 1, name,
                            pairs, seconds, pairs / seconds, per_cpu[name][-1])
        memory.stop()

    ffcv_rate, twin_rate = statistics.median(rates["ffcv"]), statistics.median(rates["twin"])
    ffcv_cpu, twin_cpu = statistics.median(per_cpu["ffcv"]), statistics.median(per_cpu["twin"])
    figures.update(
        ffcv_pairs_per_cpu_second=round(ffcv_cpu, 1), twin_pairs_per_cpu_second=round(twin_cpu, 1),
        ratio_per_cpu_second=round(ffcv_cpu / twin_cpu, 2),
        ffcv_pairs_per_second=round(ffcv_rate, 1), twin_pairs_per_second=round(twin_rate, 1),
        ratio=round(ffcv_rate / twin_rate, 2),
        ffcv_rounds=[round(x, 1) for x in rates["ffcv"]], twin_rounds=[round(x, 1) for x in rates["twin"]],
        ratio_rounds=[round(a / b, 2) for a, b in zip(rates["ffcv"], rates["twin"])],
        ffcv_peak_memory_mib=round(peaks["ffcv"] / 2**20, 1) if memory.available else None,
        twin_peak_memory_mib=round(peaks["twin"] / 2**20, 1) if memory.available else None,
    )
    print(f"pipeline      pairs/s   pairs/CPU-s   peak memory (PSS, MiB)   [{args.resolution} px, batch "
          f"{args.batch_size}, {args.workers} workers{', + BatchAugment on ' + args.device if args.augment else ''}]")
    print(f"ffcv       {ffcv_rate:10.0f} {ffcv_cpu:13.0f}   {figures['ffcv_peak_memory_mib']}")
    print(f"torchvision{twin_rate:10.0f} {twin_cpu:13.0f}   {figures['twin_peak_memory_mib']}")
    print(f"(baseline of this process before any loader: {figures['baseline_memory_mib']} MiB)")
    print(f"ratio ffcv / torchvision: {ffcv_rate / twin_rate:.2f} pairs/s (per round: {figures['ratio_rounds']}), "
          f"{ffcv_cpu / twin_cpu:.2f} pairs per CPU-second")
    if "write_seconds" in figures:
        print(f"write: {figures['write_images']} images in {figures['write_seconds']} s "
              f"({figures['write_images_per_second']} images/s), {figures['beton_mib']} MiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
