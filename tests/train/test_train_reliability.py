"""Runs that survive what loses cluster time: a changed config on resume, a damaged checkpoint,
two runs on one directory, SIGTERM, weights wanted before the end.

Each run is the plain worker process (``python -m eigenmap.train.worker``): the behaviour is the
launcher's as well, without Ray's start-up. The Ray-specific part (a killed worker, the
automatic restart) is in tests/launch/test_launch_ray.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from worker_helpers import TINY_CONFIG, run_worker, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def base_run(small_beton, tmp_path_factory) -> Path:
    """8 steps on 160 real images (10 steps per epoch), checkpoints at steps 4 and 8, logs
    every 2 steps; finished, so it has model.pt too. Tests copy it before changing it."""
    tmp = tmp_path_factory.mktemp("base_run")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG)
    proc = run_worker(tmp / "tiny.yaml", f"data.train_path={small_beton}", f"train.run_dir={tmp / 'run'}",
                      "train.max_steps=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _attempts(run_dir: Path) -> list:
    return [json.loads(line)["resumed_from_step"] for line in (run_dir / "attempts.jsonl").read_text().splitlines()]


def test_a_changed_batch_is_refused_at_once_and_resumes_sanely_when_allowed(base_run, tiny_config, small_beton,
                                                                             tmp_path):
    """Batch 16 -> 20 at step 8 of epoch 0: the new epoch has 8 steps, the saved position is
    step 8 of it, and the loader yielded nothing there while the loop went round forever."""
    run_dir = _copy(base_run, tmp_path)
    args = [f"data.train_path={small_beton}", f"train.run_dir={run_dir}", "train.max_steps=10",
            "data.batch_size_per_worker=20"]
    refused = run_worker(tiny_config, *args, timeout=90)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "data.batch_size_per_worker: 16 -> 20" in refused.stderr and "--allow-config-change" in refused.stderr
    assert "Traceback" not in refused.stderr and not (run_dir / "run.lock").exists()
    allowed = run_worker(tiny_config, *args, "--allow-config-change", timeout=180)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    # 8 x 16 = 128 images seen in the first epoch = 6 whole steps of 20; steps 9 and 10 end the epoch
    assert "loader position re-derived for global batch 20 (was 16): epoch 1, step 6 in epoch" in allowed.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["step"], status["epoch"]) == ("finished", 10, 1)
    assert _attempts(run_dir) == [None, 8]


def test_a_truncated_checkpoint_is_passed_over_and_each_step_is_logged_once(base_run, tiny_config, small_beton,
                                                                            tmp_path):
    run_dir = _copy(base_run, tmp_path)
    engine = run_dir / "checkpoints" / "step_00000008" / "engine" / "mp_rank_00_model_states.pt"
    with open(engine, "r+b") as f:
        f.truncate(engine.stat().st_size // 2)
    resumed = run_worker(tiny_config, f"data.train_path={small_beton}", f"train.run_dir={run_dir}",
                         "train.max_steps=12", "--allow-config-change")  # 4 more steps than its plan of 8
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "WARNING" in resumed.stderr and "step_00000008 is unusable" in resumed.stderr
    assert "(truncated?)" in resumed.stderr
    assert _attempts(run_dir) == [None, 4]
    # steps 6 and 8 ran twice (before the damage and after the fall-back): logged once each
    rows = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == [2, 4, 6, 8, 10, 12]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]


def test_export_writes_the_weights_of_any_kept_checkpoint(base_run, tmp_path, capsys):
    from eigenmap.run import load_run
    from launch.cli import main

    run_dir = _copy(base_run, tmp_path)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "latest")]) == 0
    latest = torch.load(tmp_path / "latest" / "model.pt", weights_only=True)
    final = torch.load(run_dir / "model.pt", weights_only=True)  # the run finished at step 8, its latest
    assert latest.keys() == final.keys() and all(torch.equal(latest[k], final[k]) for k in final)
    assert main(["export", str(run_dir), "--step", "4", "--out", str(tmp_path / "four")]) == 0
    engine = torch.load(run_dir / "checkpoints" / "step_00000004" / "engine" / "mp_rank_00_model_states.pt",
                        weights_only=True)["module"]
    four = torch.load(tmp_path / "four" / "model.pt", weights_only=True)
    assert four.keys() == engine.keys() and all(torch.equal(four[k], engine[k]) for k in engine)
    assert any(not torch.equal(four[k], final[k]) for k in final)  # step 4's weights, not the final ones
    encoder = torch.load(tmp_path / "four" / "encoder.pt", weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(encoder, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    assert load_run(run_dir, step=4).step == 4
    capsys.readouterr()
    assert main(["export", str(run_dir)]) == 2  # the run's own final weights are not replaced silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--step", "5", "--out", str(tmp_path / "five")]) == 2
    assert "kept steps: [4, 8]" in capsys.readouterr().err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_sigterm_saves_a_checkpoint_and_the_next_start_resumes_from_it(tiny_config, tmp_path):
    """A real SIGTERM to a running worker; meanwhile a second run on its directory is refused.
    The restart also finds a lock left by a process that no longer exists, and takes it over."""
    run_dir, log = tmp_path / "run", tmp_path / "worker.log"
    args = ["data.train_path=synthetic", f"train.run_dir={run_dir}", "train.epochs=40", "train.log_every_steps=2",
            "train.checkpoint_every_steps=1000"]
    proc = start_worker(tiny_config, *args, "train.max_steps=400", log=log)
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no step logged in 180 s"
            time.sleep(0.2)
        second = run_worker(tiny_config, *args, timeout=90)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"in use by another run: pid {proc.pid} on host {socket.gethostname()}" in second.stderr
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 75, log.read_text()[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    stopped = status["step"]
    assert status["status"] == "preempted" and 0 < stopped < 400
    assert (run_dir / "checkpoints" / f"step_{stopped:08d}").is_dir() and "preempted" in log.read_text()
    assert not (run_dir / "run.lock").exists() and not (run_dir / "model.pt").exists()
    (run_dir / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(),
                                                  "process_start": 1.0, "since": time.time() - 600}))
    # two more steps, not the planned 400: a changed plan, which the flag allows
    resumed = run_worker(tiny_config, *args, f"train.max_steps={stopped + 2}", "--allow-config-change")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "took over the stale lock" in resumed.stderr
    assert _attempts(run_dir) == [None, stopped]
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["step"]) == ("finished", stopped + 2)


def test_two_ranks_resume_a_one_worker_checkpoint_when_allowed_and_stop_together(base_run, tiny_config, small_beton,
                                                                                 tmp_path):
    """torchrun, 2 processes, on the 1-worker run: --allow-config-change loads its checkpoint
    (ZeRO 0: the optimiser state is whole; the new rank keeps fresh RNG states). Then the stop
    file, which `eigenmap train` writes when it gets a SIGTERM, reaches both ranks through their
    one collective of flags: they stop at the same log step, with one checkpoint of both."""
    run_dir, log = _copy(base_run, tmp_path), tmp_path / "torchrun.log"
    proc = start_worker(tiny_config, f"data.train_path={small_beton}", f"train.run_dir={run_dir}",
                        "dist.num_workers=2", "data.batch_size_per_worker=8", "train.epochs=40", "train.max_steps=400",
                        "train.checkpoint_every_steps=1000", "--allow-config-change", log=log, processes=2)
    try:
        deadline = time.monotonic() + 180
        while max((json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()),
                  default=0) <= 8:  # rows up to 8 are the 1-worker run's
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no step logged in 180 s"
            time.sleep(0.2)
        (run_dir / "stop_requested").touch()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = log.read_text()
    assert "has no RNG state of rank 1 (it was written by 1 workers)" in text
    status = json.loads((run_dir / "status.json").read_text())
    stopped = status["step"]
    assert status["status"] == "preempted" and 8 < stopped < 400 and stopped % 2 == 0, (status, text[-3000:])
    meta = json.loads((run_dir / "checkpoints" / f"step_{stopped:08d}" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == stopped
    assert _attempts(run_dir) == [None, 8]
