"""The worker loop as one plain process (no Ray): resume, non-finite stop, outputs.

Each run is a subprocess (``python -m eigenmap.train.worker``), as on a GPU machine without
Ray, so no process group or thread setting leaks into the test process.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from worker_helpers import run_worker, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_resume_gives_the_same_parameters_as_one_uninterrupted_run(tiny_config, small_beton, tmp_path):
    """25 steps in one go == the same command stopped part-way by SIGTERM, then started again.

    Tolerance: exact. The resumed run restores every parameter, buffer (BatchNorm, L2-BatchNorm),
    optimiser state, RNG state (the device augmentations' included) and the loader position,
    and runs the same deterministic fp32 CPU kernels with the same thread count, so nothing
    differs down to the last bit; any difference means some state was not restored. Both runs
    plan the same 25 steps (train.max_steps is the planned length, so the interrupted run is
    stopped by preemption, not by a shorter max_steps, whose schedule would be another).

    FFCV draws crop boxes and flips from numba's unseeded per-thread generators (see
    eigenmap/data/ffcv_loaders.py), so this test makes the CPU-side crop deterministic (full
    image, no flip); the image order, the shard and the device-side augmentations stay random
    and seeded, and they must resume exactly.
    """
    deterministic_crop = ["data.scale_min=1.0", "data.scale_max=1.0", "data.ratio_min=1.0", "data.ratio_max=1.0",
                          "data.view1.flip_prob=0.0", "data.view2.flip_prob=0.0"]
    common = [f"data.train_path={small_beton}", "train.epochs=2", "train.checkpoint_every_steps=3",
              "train.log_every_steps=1", "train.max_steps=25", *deterministic_crop]
    full = run_worker(tiny_config, *common, f"train.run_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    half_dir, log = tmp_path / "half", tmp_path / "half.log"
    proc = start_worker(tiny_config, *common, f"train.run_dir={half_dir}", log=log)
    try:
        deadline = time.monotonic() + 180
        while not any(json.loads(line)["step"] >= 4 for line in _lines(half_dir / "metrics.jsonl")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no 4 steps in 180 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 75, log.read_text()[-3000:]
    stopped = json.loads((half_dir / "status.json").read_text())["step"]
    assert 4 <= stopped < 25
    resumed = run_worker(tiny_config, *common, f"train.run_dir={half_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    attempts = [json.loads(line) for line in (half_dir / "attempts.jsonl").read_text().splitlines()]
    assert [a["resumed_from_step"] for a in attempts] == [None, stopped]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(half_dir / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    assert any(k.endswith("l2bn.num_updates") and int(a[k]) == 25 for k in a)
    status = json.loads((half_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 25
    assert (half_dir / "config.yaml").is_file() and (half_dir / "encoder.pt").is_file()
    # steps 1-10 are the first epoch (160 images / 16), 11-20 the second: step 25 is in the third,
    # counted from 1 as the console counts
    assert status["epoch"] == 3


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    run_dir = tmp_path / "nan"
    proc = run_worker(tiny_config, "data.train_path=synthetic", f"train.run_dir={run_dir}", "optim.name=sgd",
                      "optim.lr=1.0e+8", "optim.warmup_epochs=0", "train.checkpoint_every_steps=1",
                      "train.keep_checkpoints=20", "train.log_every_steps=100")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "non-finite loss or model state by step" in proc.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "nonfinite"
    saved = sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    assert saved and saved[-1] < status["step"], (saved, status["step"])
    last = torch.load(run_dir / "checkpoints" / f"step_{saved[-1]:08d}" / "engine" / "mp_rank_00_model_states.pt",
                      weights_only=False)["module"]
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())
    assert not (run_dir / "encoder.pt").exists()


def test_a_worker_count_other_than_the_jobs_is_an_error_naming_the_key(tiny_config, tmp_path):
    proc = run_worker(tiny_config, "data.train_path=synthetic", f"train.run_dir={tmp_path / 'run'}",
                      "dist.num_workers=3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: config key 'dist.num_workers' is 3 but this job has 1 processes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_online_classifiers_loss_stays_near_its_start_on_a_real_run(tiny_config, small_beton, tmp_path):
    """The number a user watches: 40 steps on real images (4 epochs of 10), logged every step.
    Its start is ln(10) = 2.3 for 10 classes; a head on raw features rose past 13 here."""
    run_dir = tmp_path / "run"
    proc = run_worker(tiny_config, f"data.train_path={small_beton}", f"train.run_dir={run_dir}", "train.epochs=4",
                      "train.log_every_steps=1", "train.checkpoint_every_steps=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(line)["cls_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert max(losses) < 1.25 * losses[0], losses


def test_a_ramped_alpha_moves_linearly_from_alpha_to_alpha_final_over_the_run(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_worker(tiny_config, "data.train_path=synthetic", f"train.run_dir={run_dir}", "train.epochs=1",
                      "loss.alpha_final=0.05", "train.log_every_steps=1", "train.checkpoint_every_steps=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = 256 // 16
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    # the row of step s is logged after the update of step s - 1, with that step's weight
    assert [r["alpha"] for r in rows] == pytest.approx([0.01 + 0.04 * s / (steps - 1) for s in range(steps)])


def test_a_max_steps_run_plans_its_schedule_over_those_steps_and_ends_at_the_floor(tiny_config, tmp_path):
    """train.max_steps is the planned length (Hugging Face Trainer's semantics): a 100-epoch
    recipe cut to 6 steps warms up over its share of them and ends its cosine at the floor."""
    run_dir = tmp_path / "run"
    proc = run_worker(tiny_config, "data.train_path=synthetic", f"train.run_dir={run_dir}", "train.epochs=100",
                      "optim.warmup_epochs=25", "train.max_steps=8", "train.log_every_steps=1",
                      "train.checkpoint_every_steps=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    peak = 0.3 * 16 / 256  # base_lr per 256 images x the global batch
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["lr"] == pytest.approx(peak * 0.001)  # the floor: optim.final_lr_ratio's default
    # the row of step s holds the lr its update used: warm-up over 25/100 of 8 steps (2), then the cosine
    assert rows[0]["lr"] == pytest.approx(peak / 2) and rows[1]["lr"] == pytest.approx(peak)
