"""``eigenmap train`` on the default embedded Ray cluster survives a killed worker.

The run is the CLI as a user types it, in a subprocess, on 160 Imagenette images (FFCV)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from launch_helpers import eigenmap_train, latest_checkpoint, run_metrics

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


# FFCV draws crops and flips from numba's unseeded per-thread generators: whole-image crops
# and no flips make two runs comparable bit for bit (order, shards, device augmentations stay
# random and seeded)
DETERMINISTIC_CROP = ["data.scale_min=1.0", "data.scale_max=1.0", "data.ratio_min=1.0", "data.ratio_max=1.0",
                      "data.view1.flip_prob=0.0", "data.view2.flip_prob=0.0"]


def test_a_killed_worker_restarts_from_the_latest_checkpoint_and_finishes(launch_config, small_beton, tmp_path):
    """The default embedded cluster; SIGKILL rank 1 mid-run; Ray restarts the group from the checkpoint.

    The run then leaves each step once in its logs, and ends with the parameters of an
    uninterrupted run of the same seed: exactly. Tolerance: none. The restart restores every
    parameter, buffer, optimiser state, RNG state and loader position of both ranks, and both
    runs execute the same fp32 CPU kernels with one thread per worker and a two-rank gloo
    all-reduce, whose summation order is fixed; the uninterrupted run is the same worker loop
    under torchrun instead of Ray (same process group backend and code path: the launcher
    does not enter the arithmetic), which keeps this test to one Ray run.
    """
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    steps = 30
    common = [f"data.train_path={small_beton}", "train.epochs=6", f"train.max_steps={steps}",
              "train.checkpoint_every_steps=4", *DETERMINISTIC_CROP]
    proc = eigenmap_train(str(launch_config), *common, f"train.run_dir={run_dir}", "dist.max_failures=2",
                          "--json", str(out), log=tmp_path / "train.log")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = [r["step"] for r in run_metrics(run_dir)]
            if done and max(done) >= 7:  # past the checkpoint of step 4, well before step 30
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before the kill: " + (tmp_path / "train.log").read_text()[-3000:]
        victim = json.loads((run_dir / "workers" / "rank1.json").read_text())["pid"]
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "train.log").read_text()
    assert proc.returncode == 0, log[-5000:]
    summary = json.loads(out.read_text())
    assert summary["status"] == "finished" and summary["step"] == steps
    attempts = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert summary["attempts"] == len(attempts) == 2, attempts
    assert attempts[0]["resumed_from_step"] is None and attempts[1]["resumed_from_step"] >= 4
    assert attempts[1]["resumed_from_step"] % 4 == 0 or attempts[1]["resumed_from_step"] % 5 == 0
    assert latest_checkpoint(run_dir).name == f"step_{steps:08d}"
    assert (run_dir / "encoder.pt").is_file()
    # the steps between the checkpoint and the kill ran twice: each is in the logs once
    assert [r["step"] for r in run_metrics(run_dir)] == list(range(1, steps + 1))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    reference = _uninterrupted_run(launch_config, [*common, f"train.run_dir={tmp_path / 'reference'}"], tmp_path)
    killed = torch.load(run_dir / "model.pt", weights_only=True)
    assert killed.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(killed[k], reference[k])]
    assert not different, f"the restarted run differs from an uninterrupted one in {different[:5]}"


def _uninterrupted_run(config: Path, overrides: list[str], tmp_path: Path) -> dict:
    """The same run in one go: the worker loop's two processes under torchrun (on loopback)."""
    import socket
    import subprocess
    import sys

    from launch_helpers import REPO, cli_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "eigenmap.train.worker", str(config), *overrides]
    done = subprocess.run(cmd, cwd=REPO, env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    run_dir = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("train.run_dir=")))
    return torch.load(run_dir / "model.pt", weights_only=True)
