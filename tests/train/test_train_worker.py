"""The worker loop as one plain process (no Ray): resume, non-finite stop, outputs.

Each run is a subprocess (``python -m eigenmap.train.worker``), as on a GPU machine without
Ray, so no process group or thread setting leaks into the test process.
"""

from __future__ import annotations

import json

import pytest
import torch

from worker_helpers import run_worker

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_resume_gives_the_same_parameters_as_one_uninterrupted_run(tiny_config, small_beton, tmp_path):
    """12 steps in one go == 6 steps, stop, restart on the same run dir to 12.

    Tolerance: exact. The resumed run restores every parameter, buffer (BatchNorm, L2-BatchNorm),
    optimiser state, RNG state (the device augmentations' included) and the loader position,
    and runs the same deterministic fp32 CPU kernels with the same thread count, so nothing
    differs down to the last bit; any difference means some state was not restored.

    FFCV draws crop boxes and flips from numba's unseeded per-thread generators (see
    eigenmap/data/ffcv_loaders.py), so this test makes the CPU-side crop deterministic (full
    image, no flip); the image order, the shard and the device-side augmentations stay random
    and seeded, and they must resume exactly.
    """
    deterministic_crop = ["data.scale_min=1.0", "data.scale_max=1.0", "data.ratio_min=1.0", "data.ratio_max=1.0",
                          "data.view1.flip_prob=0.0", "data.view2.flip_prob=0.0"]
    common = [f"data.train_path={small_beton}", "train.epochs=2", "train.checkpoint_every_steps=3",
              *deterministic_crop]
    full = run_worker(tiny_config, *common, f"train.run_dir={tmp_path / 'full'}", "train.max_steps=12")
    assert full.returncode == 0, full.stderr[-3000:]
    half = run_worker(tiny_config, *common, f"train.run_dir={tmp_path / 'half'}", "train.max_steps=6")
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = run_worker(tiny_config, *common, f"train.run_dir={tmp_path / 'half'}", "train.max_steps=12")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    attempts = [json.loads(line) for line in (tmp_path / "half" / "attempts.jsonl").read_text().splitlines()]
    assert [a["resumed_from_step"] for a in attempts] == [None, 6]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    assert any(k.endswith("l2bn.num_updates") and int(a[k]) == 12 for k in a)
    status = json.loads((tmp_path / "half" / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 12
    assert (tmp_path / "half" / "config.yaml").is_file() and (tmp_path / "half" / "encoder.pt").is_file()
    # steps 1-10 are epoch 0 (160 images / 16); the run crossed into epoch 1
    assert status["epoch"] == 1


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
