"""What Ray's own processes cost a CPU-bound PyTorch loop on the same machine.

Starts the embedded cluster as ``eigenmap train`` does (:func:`launch.ray_cluster.init_ray`),
runs a Ray Train job whose one worker only sleeps (the controller, placement-group cleaner,
synchronisation actor, dataset and autoscaling coordinators, raylet, GCS and log monitor all
live), and times a bare PyTorch training loop beside it (ResNet-18, 64 px, batch 128, SGD,
``--threads`` threads) in windows, cycling through:

  stopped     every Ray process frozen with SIGSTOP: this machine as if Ray were not there
  running     Ray as it runs under ``eigenmap train``
  sched_idle  [--sched-idle] Ray's processes except the sleeping worker at SCHED_IDLE,
              so none of their wake-ups preempts the loop's threads

A cycle's ratio is the condition's rate over that cycle's ``stopped`` rate; the median over
cycles is reported. Measured on the project's 2-core machine (``docs/results/
cpu_bench_ray_idle.json``, the command below): running / stopped 0.931 (cycles 0.897-0.958),
sched_idle / stopped 0.932. So a Ray job that does nothing already costs this loop 7%, which
is what ``bench_step.py``'s Ray + DeepSpeed / bare ratio shows, and lowering the priority of
Ray's processes does not win it back (nor did nice 19, tried earlier).

    .venv/bin/python tools/bench_ray_idle.py --cycles 12 --sched-idle --json F
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def _sleeping_worker(config: dict) -> None:
    stop = Path(config["stop_file"])
    while not stop.exists():
        time.sleep(0.5)


def start_idle_job(threads: int, storage: Path) -> threading.Thread:
    """An embedded Ray cluster and a Ray Train job of one worker that sleeps until
    ``storage/stop`` exists, fitted in a daemon thread (returned)."""
    from launch.ray_cluster import init_ray

    init_ray(None, num_cpus=threads)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(_sleeping_worker, train_loop_config={"stop_file": str(storage / "stop")},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
                           run_config=RunConfig(storage_path=str(storage)))
    job = threading.Thread(target=trainer.fit, daemon=True)
    job.start()
    return job


def ray_processes() -> dict:
    """The embedded cluster's processes (this driver's descendants): psutil object -> title."""
    import psutil

    found = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found[p] = " ".join(p.cmdline())
    return found


def signal_all(processes: list, sig: int) -> None:
    """Send ``sig`` to each process still alive (an idle Ray worker may have exited)."""
    import psutil

    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def set_policy(processes: list, policy: int) -> None:
    """Every thread of ``processes`` to ``policy``; children forked later get the default."""
    import psutil

    for p in processes:
        with contextlib.suppress(psutil.Error, OSError):
            for t in p.threads():
                os.sched_setscheduler(t.id, policy | (os.SCHED_RESET_ON_FORK if policy else 0),
                                      os.sched_param(0))


def training_loop(threads: int):
    """A callable timing ``n`` steps of a bare ResNet-18 loop; returns steps/s."""
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(128, 3, 64, 64).contiguous(memory_format=torch.channels_last)

    def steps(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            model(x).sum().backward()
            opt.step()
        return n / (time.perf_counter() - t0)

    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="training steps per window")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sched-idle", action="store_true", help="also time Ray's processes at SCHED_IDLE")
    p.add_argument("--settle", type=float, default=25.0, help="seconds for the job to start before timing")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.cycles < 1 or args.steps < 1:
        p.error("--cycles and --steps must be >= 1")
    steps = training_loop(args.threads)
    conditions = ["stopped", "running"] + (["sched_idle"] if args.sched_idle else [])
    rates: dict[str, list[float]] = {c: [] for c in conditions}
    with tempfile.TemporaryDirectory(prefix="bench_ray_idle-") as tmp:
        job = start_idle_job(args.threads, storage=Path(tmp))
        time.sleep(args.settle)
        found = ray_processes()
        everything = list(found)
        background = [proc for proc, title in found.items() if "RayTrainWorker" not in title]
        if len(background) == len(everything):
            p.error(f"the Ray Train worker did not start within --settle {args.settle} s")
        steps(3)  # warm-up
        try:
            for cycle in range(args.cycles):
                for condition in conditions:
                    if condition == "stopped":
                        signal_all(everything, signal.SIGSTOP)
                    elif condition == "sched_idle":
                        set_policy(background, os.SCHED_IDLE)
                    time.sleep(0.2)
                    try:
                        rates[condition].append(steps(args.steps))
                    finally:
                        if condition == "stopped":
                            signal_all(everything, signal.SIGCONT)
                        elif condition == "sched_idle":
                            set_policy(background, os.SCHED_OTHER)
                print(f"cycle {cycle + 1}: " + ", ".join(f"{c} {rates[c][-1]:.3f}" for c in conditions) + " steps/s",
                      flush=True)
        finally:
            signal_all(everything, signal.SIGCONT)
            (Path(tmp) / "stop").touch()
            job.join(timeout=60)
            import ray

            ray.shutdown()
    ratios = {c: [r / s for r, s in zip(rates[c], rates["stopped"])] for c in conditions if c != "stopped"}
    results = {"args": vars(args), "steps_per_sec": rates, "ratios_per_cycle": ratios,
               "ratios": {f"{c}_over_stopped": statistics.median(v) for c, v in ratios.items()},
               "ray_processes": len(everything)}
    for c, v in ratios.items():
        print(f"{c} / stopped: {statistics.median(v):.3f} median of cycles [{', '.join(f'{x:.3f}' for x in v)}]")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
