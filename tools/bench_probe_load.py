#!/usr/bin/env python
"""The linear probe on cached features, on an idle machine and beside CPU hogs (issue 33, item 8).

Runs ``eigenmap probe`` as a user does (a fresh process each time, so the thread pool and the
OpenMP wait policy are the command's own) on two seeded arrays folders (default 9,000 x 512
training and 3,900 x 512 validation features, 10 classes: an Imagenette-sized probe), ``--knn-only``
aside, and reads the probe's seconds from its JSON. Each round is run with no other process and
then with ``--hogs`` busy-loop processes (``python -c "while 1: pass"``) beside it, alternating,
so both see the same machine; the median per epoch of ``--rounds`` rounds is reported.
``--wait-policy`` passes ``OMP_WAIT_POLICY`` to the command (``unset``: the variable removed,
which now means the package's own PASSIVE; ``ACTIVE``: libgomp's spinning waits, the old default
behaviour under load).

Run: ``python tools/bench_probe_load.py --json F [--hogs 2] [--wait-policy unset|ACTIVE|PASSIVE]
[--repo OTHER_CHECKOUT]`` (``--repo``: the same measurement of another checkout's command, e.g.
the code before this change).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _arrays(folder: Path, rows: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    labels = rng.integers(0, 10, rows)
    centres = rng.standard_normal((10, width)).astype(np.float32)
    np.save(folder / "features.npy", centres[labels] + rng.standard_normal((rows, width)).astype(np.float32))
    np.save(folder / "labels.npy", labels.astype(np.int64))
    return folder


def _probe_seconds(repo: Path, train: Path, val: Path, out: Path, epochs: int, env: dict, hogs: int) -> float:
    shutil.rmtree(out, ignore_errors=True)  # a fresh report each round (a kept one would be reused)
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(hogs)]
    try:
        figures = out.with_name("figures.json")
        done = subprocess.run([sys.executable, "-m", "launch.cli", "probe", "--train", str(train), "--val", str(val),
                               "--out", str(out), "--epochs", str(epochs), "--knn-k", "20", "--json", str(figures)],
                              cwd=repo, env={**env, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                              timeout=3600)
        if done.returncode:
            raise SystemExit(f"eigenmap probe failed (exit {done.returncode}): {done.stderr[-2000:]}")
        return json.loads(figures.read_text())["linear_probe"]["seconds"] / epochs
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=9000, help="training rows (validation: 0.43 x)")
    p.add_argument("--width", type=int, default=512, help="feature width")
    p.add_argument("--epochs", type=int, default=5, help="probe epochs per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each condition (median)")
    p.add_argument("--hogs", type=int, default=2, help="busy-loop processes beside the loaded rounds")
    p.add_argument("--wait-policy", default="unset", help="OMP_WAIT_POLICY for the command, or 'unset'")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose command runs (default: this one)")
    p.add_argument("--json", type=Path, required=True, help="write the figures here")
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["DS_ACCELERATOR"] = "cpu"
    if args.wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.wait_policy
    with tempfile.TemporaryDirectory() as tmp:
        train = _arrays(Path(tmp) / "train", args.rows, args.width, 0)
        val = _arrays(Path(tmp) / "val", int(0.43 * args.rows), args.width, 1)
        idle, loaded = [], []
        for _ in range(args.rounds):
            idle.append(_probe_seconds(args.repo, train, val, Path(tmp) / "out", args.epochs, env, 0))
            loaded.append(_probe_seconds(args.repo, train, val, Path(tmp) / "out", args.epochs, env, args.hogs))
    figures = {"seconds_per_epoch_idle": statistics.median(idle),
               "seconds_per_epoch_with_hogs": statistics.median(loaded),
               "rounds_idle": idle, "rounds_with_hogs": loaded, "hogs": args.hogs, "wait_policy": args.wait_policy,
               "repo": str(args.repo.resolve()), "rows": args.rows, "width": args.width, "epochs": args.epochs,
               "cpus": os.cpu_count(),
               "load_average_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
