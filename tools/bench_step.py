"""Training-step throughput: a bare PyTorch loop against the real worker loop (DeepSpeed, Ray).

The same model, batch and data go through:

  bare        one process, plain PyTorch: augment -> forward (both views) -> backward -> step,
              the worker's own step function (``eigenmap.train.step.train_step``) on a bare
              model and optimiser
  deepspeed   the worker loop ``eigenmap.train.worker.train`` as one plain process (no Ray)
  ray         ``eigenmap train`` (Ray TorchTrainer) with 1 worker x T threads        [--device cpu]
  ray_2x1     the same with 2 workers x 1 thread (same global batch)                 [--device cpu]
  backbone_alone  the torchvision backbone alone on both views' images, cross-entropy + SGD:
              the practical bound of the step; the worker loop's share of it     [--device cuda]

Data: synthetic by default (random uint8 pairs made on the device, batched augmentations
included). With ``--data PATH`` (a .beton, or an ImageFolder written to one first) the worker
loops read the real file, and the reference is ``model_step`` instead of ``bare``: the model
step alone (forward, backward, LARS) on one pre-augmented batch, so the ratio is what the
loader, the augmentation and the engine cost.

Rates are source images per second (each image gives two views: "image pairs/s"): the
median over windows of ``--window`` steps after ``--warmup`` steps; the worker's windows
exclude its logging and checkpoints, as the bare loop's do. On CPU the runs are interleaved
in ``--rounds`` rounds (bare, deepspeed, ray, ray_2x1, bare, ...): each round's ratio divides
by the mean of the bare runs on either side of it, and the reported ratio is the median over
rounds, so that the drift of a shared machine cancels. During each Ray run it also samples
the CPU use of every process (``cpu_cores_while_training``: the training workers, and
everything else: Ray's own processes, the driver, other jobs). On CUDA it also counts the
model FLOPs of one step (FlopCounterMode) and measures a large dense bf16 matmul in the same
run:
``fraction_of_matmul_peak`` = achieved FLOP/s / matmul FLOP/s.

CPU (this project's machines)::

    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_step.py --json bench.json

One GPU, plain process, torch only (Ray not needed; DeepSpeed used if importable)::

    python tools/bench_step.py --device cuda --arch resnet50 --resolution 224 --synthetic --json out.json

The worker loop on real data against the model step alone (CPU)::

    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_step.py --data ../shared/data/imagenette2-96/train --json F
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # the package, and plain_engine.py beside this script

import torch  # noqa: E402
import yaml  # noqa: E402

from eigenmap.config import Config, from_dict, to_dict  # noqa: E402
from eigenmap.host_memory import keep_freed_memory  # noqa: E402
from eigenmap.run import RunDir  # noqa: E402
from eigenmap.train.checks import prepare_train_config  # noqa: E402


def bench_config(args: argparse.Namespace, run_dir: Path) -> Config:
    """The benchmark's config: ``configs/`` style values set from the arguments."""
    steps = args.warmup + args.steps
    cuda = args.device == "cuda"
    timm = args.arch.startswith("timm:")
    values = {
        "model": {"arch": args.arch, "small_image_stem": args.small_stem,
                  "projector_hidden_dim": args.projector_dim, "projector_out_dim": args.projector_dim,
                  "num_classes": 1000, **({"timm_kwargs": args.timm_kwargs} if timm else {})},
        # a transformer's optimiser (the ViT recipes'); the paper's LARS for the ResNets
        "optim": {"name": "adamw" if timm else "lars", "warmup_epochs": 0.0},
        "data": {"train_path": str(args.data) if args.data else "synthetic", "resolution": args.resolution,
                 "eval_resize": max(args.resolution, 256 if args.resolution >= 224 else args.resolution),
                 "batch_size_per_worker": args.batch, "synthetic_images": args.batch * (steps + 1) * 2},
        "dist": {"num_workers": 1, "cpus_per_worker": args.threads, "gpus_per_worker": 1.0 if cuda else 0.0,
                 "zero_stage": 0, "precision": args.precision, "compile": args.compile, "max_failures": 0},
        "train": {"run_dir": str(run_dir), "epochs": args.epochs, "max_steps": steps, "log_every_steps": args.window,
                  "checkpoint_every_steps": 10**9, "keep_checkpoints": 1, "progress_bar": False,
                  "tensorboard": False, "seed": 0},
    }
    return prepare_train_config(from_dict(values))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate_figures(window_rates: list[float]) -> dict:
    """A run's rate: the median over its timing windows, and the windows themselves."""
    median = statistics.median(window_rates) if window_rates else float("nan")
    return {"images_per_sec": median, "window_rates": window_rates}


def _window_timed(step, args: argparse.Namespace, batch: int, device: torch.device) -> list[float]:
    """Run ``step()`` for ``--warmup`` + ``--steps`` steps; images/s of each ``--window`` steps after
    the warm-up. ``step()`` returns a tensor read once per window (a log step's host sync)."""
    rates, t0 = [], None
    for i in range(args.warmup + args.steps):
        out = step()
        if i + 1 == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        elif i + 1 > args.warmup and (i + 1 - args.warmup) % args.window == 0:
            out.item()
            rates.append(args.window * batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
    return rates


def bare_loop(cfg: Config, args: argparse.Namespace, pre_augmented: bool = False) -> dict:
    """The worker's step with nothing around it: no DeepSpeed, no process group, no logger.

    ``pre_augmented``: the model step alone, on one batch loaded and augmented before timing.
    """
    from eigenmap.models import build_model
    from eigenmap.train.engine import precision_of
    from plain_engine import PlainEngine
    from eigenmap.train.optim import build_optimizer
    from eigenmap.train.step import train_step
    from eigenmap.train.worker import build_augment, build_loader

    device = torch.device(args.device)
    precision = precision_of(cfg, device)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if model.channels_last:  # the worker's rule: convolutional backbones only
        model = model.to(memory_format=torch.channels_last)
    engine = PlainEngine(torch.compile(model) if cfg.dist.compile else model, build_optimizer(model, cfg), precision)
    augment = build_augment(cfg, rank=0, device=device, channels_last=model.channels_last)
    loader = build_loader(cfg, rank=0, world_size=1, device=device)
    it = iter(loader)
    fixed = None
    if pre_augmented:
        v1, v2, labels = next(it)
        fixed = (*augment(v1, v2), labels)

    taken = iter(range(10**12))  # the global step, as the worker loop counts it

    def step() -> torch.Tensor:
        if fixed is not None:
            return train_step(engine, *fixed, next(taken))["total"]
        v1, v2, labels = next(it)
        return train_step(engine, *augment(v1, v2), labels, next(taken))["total"]

    rates = _window_timed(step, args, cfg.data.batch_size_per_worker, device)
    flops = count_step_flops(PlainEngine(model, engine.optimizer, precision), augment, loader) \
        if device.type == "cuda" else None
    return {**_rate_figures(rates), "flops_per_step": flops, "precision": precision}


def count_step_flops(engine, augment, loader) -> float:
    """Model FLOPs of one training step (forward + backward), counted by FlopCounterMode.

    ``engine`` is a :class:`plain_engine.PlainEngine` (eager model); its gradients
    are cleared afterwards and no optimiser step is taken.
    """
    from torch.utils.flop_counter import FlopCounterMode

    v1, v2, labels = next(iter(loader))
    x = torch.cat(augment(v1, v2))
    with FlopCounterMode(display=False) as counter:
        out = engine(x, labels)
        engine.backward(out["total"])
    engine.module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, iters: int = 20) -> float:
    """Measured dense matmul FLOP/s of an n x n x n product in ``dtype`` (the achievable ceiling)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def worker_loop(cfg: Config, args: argparse.Namespace) -> dict:
    """The real worker loop as one plain process (DeepSpeed engine, world of size 1)."""
    try:
        from eigenmap.train.engine import import_deepspeed

        import_deepspeed(args.device)
    except RuntimeError as e:
        return {"skipped": f"deepspeed is missing: {e}"}
    from eigenmap.train.worker import train

    try:
        summary = train(cfg)
    except Exception as e:  # report it with the bare figures rather than lose them
        import traceback

        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}
    rates = _window_rates(cfg, args)
    return {**_rate_figures(rates), "status": summary["status"]}


def _window_rates(cfg: Config, args: argparse.Namespace) -> list[float]:
    """Per-window total images/s from the run's metrics.jsonl, warm-up windows dropped."""
    path = RunDir(cfg.train.run_dir).metrics
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r["images_per_sec"] for r in rows if r["step"] > args.warmup]


def ray_loop(cfg: Config, args: argparse.Namespace, workers: int, threads: int) -> dict:
    """``eigenmap train`` through Ray with ``workers`` x ``threads``, same global batch."""
    from launch.ray_runner import run_on_ray

    values = to_dict(cfg)
    values["dist"].update(num_workers=workers, cpus_per_worker=threads)
    values["data"]["batch_size_per_worker"] = cfg.data.batch_size_per_worker * cfg.dist.num_workers // workers
    values["train"]["run_dir"] = f"{cfg.train.run_dir}-ray{workers}x{threads}"
    cfg_w = prepare_train_config(from_dict(values))
    t0 = time.perf_counter()
    with CpuSampler() as sampler:
        summary = run_on_ray(cfg_w)
    rates = _window_rates(cfg_w, args)
    return {**_rate_figures(rates), "status": summary["status"], "workers": workers, "threads_per_worker": threads,
            "wall_seconds": time.perf_counter() - t0, "cpu_cores_while_training": sampler.cores()}


class CpuSampler:
    """CPU use of every process on the machine while a Ray run trains, as cores.

    Snapshots every ``interval_s``; :meth:`cores` sums the training workers
    ("ray::RayTrainWorker") and everything else (Ray's own processes, this driver, other jobs)
    separately.
    """

    def __init__(self, interval_s: float = 5.0):
        self.interval_s, self.snapshots = interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.interval_s):
            snap = {}
            for p in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    snap[p.pid] = (" ".join(p.cmdline()) or p.name(), sum(p.cpu_times()[:2]))
            self.snapshots.append((time.perf_counter(), snap))

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self) -> dict:
        """Mean cores per process group over the intervals of steady training (start-up, the
        final checkpoint and the tear-down left out: the workers' use below 80% of its peak)."""
        trained = [s for s in self.snapshots if any("RayTrainWorker" in t for t, _ in s[1].values())]
        intervals = []
        for (t0, a), (t1, b) in zip(trained, trained[1:]):
            use = {pid: (title, cpu - a[pid][1]) for pid, (title, cpu) in b.items() if pid in a}
            busy = sum(c for title, c in use.values() if "RayTrainWorker" in title)
            intervals.append((t1 - t0, busy, use))
        if not intervals:
            return {}
        peak = max(busy / dt for dt, busy, _ in intervals)
        steady = [(dt, use) for dt, busy, use in intervals if busy / dt >= 0.8 * peak]
        seconds = sum(dt for dt, _ in steady)
        per_process: dict[int, list] = {}
        for _, use in steady:
            for pid, (title, c) in use.items():
                per_process.setdefault(pid, [title, 0.0])[1] += c / seconds
        workers = sum(c for title, c in per_process.values() if "RayTrainWorker" in title)
        others = sorted(((c, title[:60]) for title, c in per_process.values() if "RayTrainWorker" not in title),
                        reverse=True)
        return {"seconds": seconds, "training_workers": workers, "everything_else": sum(c for c, _ in others),
                "top_others": [{"cores": c, "process": title} for c, title in others[:8]]}


def measure_rounds(args: argparse.Namespace, tmp: Path) -> dict:
    """The runs, interleaved: bare, then each other kind, then bare again, ``--rounds`` times.

    Each round's ratios divide by the mean of the bare runs just before and just after it, so a
    machine whose speed drifts (a shared host) moves numerator and denominator together.
    """
    cuda = args.device == "cuda"
    with_ray = not cuda and not args.no_ray
    reference = reference_kind(args)
    runs: dict[str, list[dict]] = {reference: []}

    def record(kind: str, result: dict) -> None:
        runs.setdefault(kind, []).append(result)
        rate = result.get("images_per_sec")
        why = result.get("skipped") or result.get("error")
        print(f"{kind} run {len(runs[kind])}: " +
              (f"{rate:.1f} images/s" if rate is not None else f"NOT MEASURED ({why})"), flush=True)

    record(reference, bare_loop(bench_config(args, tmp / "bare0"), args, pre_augmented=bool(args.data)))
    for r in range(args.rounds):
        cfg = bench_config(args, tmp / f"round{r}")
        if cuda:
            torch.cuda.empty_cache()
        record("deepspeed", worker_loop(cfg, args))
        if cuda:
            record("backbone_alone", backbone_alone(args))
        if with_ray:
            record(f"ray_1x{args.threads}", ray_loop(cfg, args, 1, args.threads))
            if args.threads >= 2 and args.batch % 2 == 0:
                record("ray_2x1", ray_loop(cfg, args, 2, 1))
        if not cuda:  # the reference after each round: it drifts with the machine
            record(reference, bare_loop(bench_config(args, tmp / f"bare{r + 1}"), args, pre_augmented=bool(args.data)))
    return runs


def reference_kind(args: argparse.Namespace) -> str:
    """What the ratios divide by: the bare loop, or with ``--data`` the model step alone."""
    return "model_step" if args.data else "bare"


def round_ratios(runs: dict[str, list[dict]], threads: int, reference: str = "bare") -> dict[str, list[float]]:
    """Per-round throughput ratios (median-window rates), against that round's reference runs."""
    ref = [r["images_per_sec"] for r in runs[reference]]
    rounds = max((len(v) for k, v in runs.items() if k != reference), default=0)
    ratios: dict[str, list[float]] = {}
    for i in range(rounds):
        den = (ref[i] + ref[i + 1]) / 2 if i + 1 < len(ref) else ref[i]
        rate = {k: v[i].get("images_per_sec") for k, v in runs.items() if k != reference and i < len(v)}
        pairs = {f"deepspeed_over_{reference}": (rate.get("deepspeed"), den),
                 f"ray_deepspeed_over_{reference}": (rate.get(f"ray_1x{threads}"), den),
                 f"ray_2x1_over_1x{threads}": (rate.get("ray_2x1"), rate.get(f"ray_1x{threads}"))}
        for name, (num, d) in pairs.items():
            if num is not None and d:
                ratios.setdefault(name, []).append(num / d)
    return ratios


def backbone_alone(args: argparse.Namespace) -> dict:
    """The practical bound of a two-view step: the torchvision backbone alone on 2 x ``--batch``
    images (cross-entropy on its 1000-way head, SGD), channels_last, bf16 autocast on CUDA,
    compiled with ``--compile``; no projector, objective, augmentation or engine.

    Returns the median-window rate in image PAIRS per second (half the images per second), so
    it compares directly with the worker loop's.
    """
    import torchvision

    from eigenmap.timm_models import is_convolutional

    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.arch.startswith("timm:"):
        import timm

        model = timm.create_model(args.arch[len("timm:"):], pretrained=False, **args.timm_kwargs).to(device)
    else:
        model = getattr(torchvision.models, args.arch)().to(device)
    layout = torch.channels_last if is_convolutional(model) else torch.contiguous_format  # the worker's rule
    model = model.to(memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    forward = torch.compile(model) if args.compile else model
    x = torch.randn(2 * args.batch, 3, args.resolution, args.resolution, device=device).contiguous(
        memory_format=layout)
    y = torch.randint(0, 1000, (2 * args.batch,), device=device)
    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return _rate_figures(_window_timed(step, args, args.batch, device))


def gpu_figures(args: argparse.Namespace, runs: dict[str, list[dict]]) -> dict:
    """Pairs/s per GPU and the step's fraction of the dense bf16 matmul rate measured now."""
    bare = runs[reference_kind(args)][0]
    flops = bare["flops_per_step"]
    peak = matmul_peak(torch.device("cuda"), torch.bfloat16, 8192)
    rate = bare["images_per_sec"]
    figures = {"image_pairs_per_sec_per_gpu": rate, "model_flops_per_step": flops,
               "achieved_tflops": flops * rate / args.batch / 1e12, "bf16_matmul_tflops": peak / 1e12,
               "fraction_of_matmul_peak": flops * rate / args.batch / peak}
    ds = runs.get("deepspeed", [{}])[0].get("images_per_sec")
    if ds is not None:
        figures.update(deepspeed_image_pairs_per_sec_per_gpu=ds,
                       deepspeed_fraction_of_matmul_peak=flops * ds / args.batch / peak)
    alone = runs.get("backbone_alone", [{}])[0].get("images_per_sec")
    if alone is not None and ds is not None:  # the target: >= 0.95
        figures.update(backbone_alone_image_pairs_per_sec=alone, deepspeed_over_backbone_alone=ds / alone)
    return figures


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments with the device's defaults filled in (checked; no device is touched)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--arch", default="resnet18",
                   help="resnet18, resnet34, resnet50, or timm:NAME (e.g. timm:vit_tiny_patch16_224)")
    p.add_argument("--timm-kwarg", action="append", default=[], metavar="KEY=VALUE", dest="timm_kwarg",
                   help="a model.timm_kwargs entry for --arch timm:NAME, e.g. img_size=64 (repeatable)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--small-stem", action="store_true", help="3x3 stride-1 stem (16x the FLOPs at 64 px)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 64 CPU, 256 CUDA)")
    p.add_argument("--projector-dim", type=int, default=None, help="d = k (default 512 CPU, 8192 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="steps before timing (default 6 CPU, 20 CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 24 CPU, 60 CUDA)")
    p.add_argument("--window", type=int, default=None, help="steps per timing window (default 3 CPU, 5 CUDA)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds; ratios are the median over rounds (default 3 CPU, 1 CUDA)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the 1-worker runs (default: all cores)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--synthetic", action="store_true", help="random data made on the device (the default)")
    p.add_argument("--data", type=Path, default=None,
                   help="real data: a .beton, or an ImageFolder (written to a .beton first); the reference "
                        "becomes the model step alone on a pre-augmented batch")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray runs (they need the ray package)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if args.arch not in ("resnet18", "resnet34", "resnet50") and not args.arch.startswith("timm:"):
        p.error(f"--arch {args.arch!r}: accepted resnet18, resnet34, resnet50 or timm:NAME")
    if args.timm_kwarg and not args.arch.startswith("timm:"):
        p.error("--timm-kwarg applies to --arch timm:NAME")
    if any("=" not in kv for kv in args.timm_kwarg):
        p.error(f"--timm-kwarg takes KEY=VALUE, got {args.timm_kwarg}")
    args.timm_kwargs = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.timm_kwarg)}
    if args.synthetic and args.data:
        p.error("--synthetic and --data exclude each other")
    if args.data is not None and not args.data.exists():
        p.error(f"--data '{args.data}' does not exist; pass a .beton or an ImageFolder tree")
    args.batch = args.batch or (256 if cuda else 64)
    args.projector_dim = args.projector_dim or (8192 if cuda else 512)
    args.warmup = args.warmup if args.warmup is not None else (20 if cuda else 6)
    args.steps = args.steps if args.steps is not None else (60 if cuda else 24)
    args.window = args.window or (5 if cuda else 3)
    args.rounds = args.rounds or (1 if cuda else 3)
    args.threads = args.threads or (os.cpu_count() or 1)
    args.epochs = 1
    if args.steps % args.window or args.warmup % args.window:
        p.error(f"--steps ({args.steps}) and --warmup ({args.warmup}) must be multiples of --window ({args.window})")
    return args


def _real_data(args: argparse.Namespace, tmp: Path) -> None:
    """--data as a .beton (an ImageFolder is written to one), with enough epochs for the steps."""
    from eigenmap.data import read_manifest, steps_per_epoch, write_beton

    if args.data.is_dir():
        beton = tmp / "data.beton"
        write_beton(args.data, beton, workers=os.cpu_count() or 1)
        args.data = beton
    per_epoch = steps_per_epoch(read_manifest(args.data)["num_images"], world_size=1, batch_size=args.batch)
    if per_epoch == 0:
        raise SystemExit(f"--data '{args.data}' has fewer images than one batch of {args.batch}")
    args.epochs = -(-(args.warmup + args.steps + 1) // per_epoch)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(args.threads)
        # the worker loop does this on CPU; the bare loop in this process needs it too, or the
        # ratio would hold the allocator's page faults on one side only
        keep_freed_memory()
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    results: dict = {"device": torch.cuda.get_device_name() if cuda else f"cpu x{os.cpu_count()}",
                     "torch": torch.__version__, "args": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in vars(args).items()},
                     "reference": reference_kind(args)}
    with tempfile.TemporaryDirectory(prefix="bench_step-") as tmp:
        if args.data:
            _real_data(args, Path(tmp))
        runs = measure_rounds(args, Path(tmp))
    per_round = round_ratios(runs, args.threads, reference_kind(args))
    results.update(runs=runs, ratios_per_round=per_round,
                   ratios={name: statistics.median(v) for name, v in per_round.items()})
    if cuda:
        results["gpu"] = gpu_figures(args, runs)
    for kind, rs in runs.items():
        rates = ", ".join(f"{r['images_per_sec']:.1f}" for r in rs if "images_per_sec" in r)
        print(f"{kind}: {rates} images/s (median window of each run)")
    for kind, rs in runs.items():
        for i, r in enumerate(rs):
            c = r.get("cpu_cores_while_training")
            if c:
                print(f"{kind} run {i + 1}: CPU while training: workers {c['training_workers']:.3f} cores, "
                      f"everything else {c['everything_else']:.3f} cores")
    for name, values in per_round.items():
        print(f"{name}: {results['ratios'][name]:.3f} median of rounds [{', '.join(f'{v:.3f}' for v in values)}]")
    if cuda:
        g = results["gpu"]
        print(f"GPU: {g['image_pairs_per_sec_per_gpu']:.0f} image pairs/s, {g['achieved_tflops']:.1f} TFLOP/s = "
              f"{g['fraction_of_matmul_peak']:.2%} of the measured bf16 matmul rate ({g['bf16_matmul_tflops']:.0f} TFLOP/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
