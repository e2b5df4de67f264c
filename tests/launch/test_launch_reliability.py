"""``eigenmap train`` refuses, before Ray or any worker starts, what would fail (or loop) later:
a damaged data file, a run directory in use, a resume whose settings changed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eigenmap.config import to_dict
from eigenmap.data.manifest import manifest_path
from eigenmap.train.checkpoint import LocalCheckpointStore
from eigenmap.train.checks import load_train_config
from test_launch_config_errors import _train  # `eigenmap train` that also fails if Ray or DeepSpeed was imported

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_a_damaged_data_file_is_refused_before_any_worker_starts(damage, launch_config, small_beton, tmp_path):
    beton = tmp_path / "train.beton"
    shutil.copy(small_beton, beton)
    shutil.copy(manifest_path(small_beton), manifest_path(beton))
    size = beton.stat().st_size
    with open(beton, "r+b") as f:
        f.truncate(size // 2 if damage == "truncated" else 0)
    proc = _train(str(launch_config), f"data.train_path={beton}", f"train.run_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    want = f"has {size // 2} bytes but its manifest records {size}" if damage == "truncated" else "is empty (0 bytes)"
    assert want in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_directory_in_use_is_refused_naming_the_holder(launch_config, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        import psutil

        (run_dir / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                      "process_start": psutil.Process(holder.pid).create_time(),
                                                      "since": time.time()}))
        proc = _train(str(launch_config), "data.train_path=synthetic", f"train.run_dir={run_dir}")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"in use by another run: pid {holder.pid} on host {socket.gethostname()}" in proc.stderr
    assert (run_dir / "run.lock").exists()  # the holder's, left alone


def test_a_resume_with_a_changed_batch_and_worker_count_is_refused_listing_both(launch_config, tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_train_config(launch_config, ["data.train_path=synthetic", f"train.run_dir={run_dir}"])

    def write(path: Path) -> None:  # a checkpoint of this run at step 4 (the refusal reads no weights)
        (path / "engine").mkdir()
        torch.save({}, path / "engine" / "mp_rank_00_model_states.pt")
        torch.save({}, path / "trainer_state.pt")
        for rank in (0, 1):
            torch.save({}, path / f"rng_rank{rank}.pt")
        (path / "meta.json").write_text(json.dumps({"step": 4, "world_size": 2, "config": to_dict(cfg)}))

    LocalCheckpointStore(run_dir / "checkpoints", keep=2).save(4, write, {})
    proc = _train(str(launch_config), "data.train_path=synthetic", f"train.run_dir={run_dir}",
                  "dist.num_workers=1", "data.batch_size_per_worker=8", "train.max_steps=50")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.batch_size_per_worker: 16 -> 8" in proc.stderr and "dist.num_workers: 2 -> 1" in proc.stderr
    assert "max_steps" not in proc.stderr and "--allow-config-change" in proc.stderr
    assert not (run_dir / "run.lock").exists()
