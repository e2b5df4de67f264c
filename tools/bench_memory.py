"""Memory per worker of one training step at DeepSpeed ZeRO stages 0-3, beside what sharding should save.

For each stage, ``--workers`` processes (gloo on 127.0.0.1, one CPU thread each, or one GPU each
with ``--device cuda``) build the model of ``--config`` (default: the ViT-B/16 recipe), wrap it in
the worker's own DeepSpeed engine (:func:`eigenmap.train.engine.build_engine`, AdamW as a client
optimiser) and take ``--steps`` training steps (:func:`eigenmap.train.step.train_step`) on
random pre-augmented views. Each rank reports:

- ``resident_mib``: its resident memory after the steps, freed memory handed back to the OS
  first (``malloc_trim``): parameters, gradients, optimiser state and DeepSpeed's buffers, less
  the resident memory before the model was built (imports, the process group); on CUDA,
  ``torch.cuda.memory_allocated``;
- ``peak_mib``: the process's peak resident memory (``ru_maxrss``), activations included, less the
  same start; on CUDA, ``torch.cuda.max_memory_allocated``. The first step also allocates the
  optimiser's state (and, for AdamW's foreach kernels, temporaries of the same size), so
- ``steady_peak_mib``: the peak of the steps after the first (the kernel's peak counter reset
  after step 1, ``/proc/self/clear_refs``; on CUDA ``reset_peak_memory_stats``), with ``--steps``
  of 2 or more: what a long run's every step needs.

Expected sharding, for P parameters in fp32 over W workers: ZeRO 1 saves (1 - 1/W) of the Adam
states (8P bytes), ZeRO 2 also of the gradients (4P), ZeRO 3 also of the parameters (4P).
``fraction_of_expected`` is the measured saving of ``resident_mib`` against stage 0 over that
expectation. A stage DeepSpeed refuses here is reported with DeepSpeed's own message.

    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_memory.py --arch timm:vit_base_patch16_224 --json out.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from eigenmap.config import Config, apply_overrides, from_dict, resolve, to_dict  # noqa: E402

MIB = 2**20


def bench_config(args: argparse.Namespace, stage: int) -> Config:
    """The recipe of ``--config`` cut to a benchmark: fp32, small batch, this stage, no data path."""
    import yaml

    values = yaml.safe_load(Path(args.config).read_text())
    overrides = [f"data.batch_size_per_worker={args.batch}", f"dist.num_workers={args.workers}",
                 f"dist.zero_stage={stage}", "dist.compile=false", "dist.cpus_per_worker=1",
                 f"dist.gpus_per_worker={1 if args.device == 'cuda' else 0}",
                 f"dist.precision={'bf16' if args.device == 'cuda' else 'fp32'}", "data.train_path=synthetic",
                 f"data.resolution={args.resolution}", f"data.eval_resize={args.resolution}", *args.set]
    if args.arch:
        overrides.append(f"model.arch={args.arch}")
    return resolve(from_dict(apply_overrides(values, overrides)))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed activations back to the OS: RSS = what is held
    except OSError:
        pass


def _peak_bytes(device: torch.device) -> int:
    """Peak memory since the start or the last :func:`_reset_peak` (CPU: VmHWM, resident)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib * 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    _trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size


def _rank_main(rank: int, world: int, port: int, values: dict, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from eigenmap.models import build_model
    from eigenmap.train.engine import build_engine, init_process_group, pick_device
    from eigenmap.train.optim import build_optimizer
    from eigenmap.train.step import train_step

    cfg = from_dict(values)
    torch.set_num_threads(1)
    device = pick_device(cfg)
    report: dict = {"rank": rank}
    try:
        init_process_group(device)
        _trim()
        start = _resident_bytes()
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        engine, _ = build_engine(cfg, model, build_optimizer(model, cfg), device,
                                 "bf16" if device.type == "cuda" else "fp32")
        b, r = cfg.data.batch_size_per_worker, cfg.data.resolution
        x1, x2 = (torch.randn(b, 3, r, r, device=device) for _ in range(2))
        labels = torch.zeros(b, dtype=torch.long, device=device)
        t0 = time.perf_counter()
        train_step(engine, x1, x2, labels, 0)
        first_peak = _peak_bytes(device)
        _reset_peak(device)
        for step in range(1, steps):
            train_step(engine, x1, x2, labels, step)
        report["seconds_per_step"] = (time.perf_counter() - t0) / steps
        if steps > 1:
            report["steady_peak_mib"] = (_peak_bytes(device) - (0 if device.type == "cuda" else start)) / MIB
        if device.type == "cuda":
            report.update(resident_mib=torch.cuda.memory_allocated() / MIB, peak_mib=first_peak / MIB)
        else:
            _trim()
            report.update(resident_mib=(_resident_bytes() - start) / MIB, peak_mib=(first_peak - start) / MIB)
    except Exception as e:  # a stage this DeepSpeed build does not run: its own words
        report["error"] = f"{type(e).__name__}: {e}"
    Path(out).write_text(json.dumps(report))


def run_stage(args: argparse.Namespace, stage: int, tmp: Path) -> dict:
    """All ranks of one stage in fresh processes; their reports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    values = to_dict(bench_config(args, stage))
    outs = [str(tmp / f"stage{stage}_rank{r}.json") for r in range(args.workers)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, args.workers, port, values, args.steps, outs[r]))
             for r in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    ranks = [json.loads(Path(o).read_text()) if Path(o).is_file() else {"error": f"exit code {p.exitcode}"}
             for o, p in zip(outs, procs)]
    errors = sorted({r["error"] for r in ranks if "error" in r})
    if errors:
        return {"ranks": ranks, "error": errors[0]}
    steady = [r["steady_peak_mib"] for r in ranks if "steady_peak_mib" in r]
    return {"ranks": ranks, "resident_mib": max(r["resident_mib"] for r in ranks),
            "peak_mib": max(r["peak_mib"] for r in ranks), "steady_peak_mib": max(steady) if steady else None,
            "seconds_per_step": max(r["seconds_per_step"] for r in ranks)}


def expected_savings(params: int, world: int) -> dict[str, float]:
    """MiB per worker that ZeRO 1/2/3 should save against stage 0, fp32 weights, Adam."""
    share = 1 - 1 / world
    adam, grads, weights = 8 * params / MIB, 4 * params / MIB, 4 * params / MIB
    return {"1": share * adam, "2": share * (adam + grads), "3": share * (adam + grads + weights)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "imagenet_vit_base_100ep.yaml"))
    p.add_argument("--arch", default=None, help="model.arch (default: the config's), e.g. timm:vit_base_patch16_224")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=2, help="images per worker (each gives two views)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3], choices=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=2, help="steps per stage, >= 2 for the steady-step peak")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import tempfile

    from eigenmap.models import build_model

    cfg = bench_config(args, 0)
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg).parameters())
    results = {"arch": cfg.model.arch, "params": params, "workers": args.workers, "batch_per_worker": args.batch,
               "resolution": args.resolution, "device": args.device, "torch": torch.__version__,
               "expected_saving_mib": expected_savings(params, args.workers), "stages": {}}
    with tempfile.TemporaryDirectory(prefix="bench_memory-") as tmp:
        for stage in args.stages:
            results["stages"][str(stage)] = run_stage(args, stage, Path(tmp))
            print(f"ZeRO {stage}: {json.dumps({k: v for k, v in results['stages'][str(stage)].items() if k != 'ranks'})}",
                  flush=True)
    base = results["stages"].get("0", {}).get("resident_mib")
    base_peak = results["stages"].get("0", {}).get("steady_peak_mib")
    for stage, expected in results["expected_saving_mib"].items():
        r = results["stages"].get(stage, {})
        if base is not None and r.get("resident_mib") is not None:
            r.update(saving_mib=base - r["resident_mib"], fraction_of_expected=(base - r["resident_mib"]) / expected)
        if base_peak is not None and r.get("steady_peak_mib") is not None:
            r.update(steady_peak_saving_mib=base_peak - r["steady_peak_mib"],
                     steady_peak_fraction_of_expected=(base_peak - r["steady_peak_mib"]) / expected)
    print(f"{cfg.model.arch}: {params / 1e6:.1f}M parameters; expected saving per worker (MiB): "
          + ", ".join(f"ZeRO {k}: {v:.0f}" for k, v in results["expected_saving_mib"].items()))
    for stage, r in results["stages"].items():
        if "error" in r:
            print(f"ZeRO {stage}: did not run: {r['error']}")
        else:
            extra = (f"; resident saves {r['saving_mib']:.0f} MiB = {r['fraction_of_expected']:.2f} of expected"
                     if "saving_mib" in r else "")
            if "steady_peak_saving_mib" in r:
                extra += (f", steady peak saves {r['steady_peak_saving_mib']:.0f} MiB = "
                          f"{r['steady_peak_fraction_of_expected']:.2f}")
            steady = f", steady-step peak {r['steady_peak_mib']:.0f}" if r.get("steady_peak_mib") else ""
            print(f"ZeRO {stage}: resident {r['resident_mib']:.0f} MiB, first-step peak {r['peak_mib']:.0f}{steady} "
                  f"MiB per worker{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
