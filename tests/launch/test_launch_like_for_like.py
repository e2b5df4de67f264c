"""Reruns keep what is done, and a leaked validation set is caught by its content (issue 33).

A finished run trained again says so and changes nothing; probe and retrieve of unchanged
inputs reuse their figures; the feature cache follows the weights' contents, not their time; a
validation set that is the training images prepared again is refused by the probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launch_helpers import REPO, TINY_RUN, cli_env, eigenmap

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def finished(small_beton, tmp_path_factory) -> tuple[Path, list[str]]:
    """A run of 10 steps on 160 real images (one plain worker) and the train arguments that made it."""
    tmp = tmp_path_factory.mktemp("like-run")
    (tmp / "run.yaml").write_text(TINY_RUN)
    run_dir = tmp / "run"
    args = [str(tmp / "run.yaml"), f"data.train_path={small_beton}", f"train.run_dir={run_dir}"]
    done = subprocess.run([sys.executable, "-m", "eigenmap.train.worker", *args], cwd=REPO,
                          env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, args


def _digests(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (the run lock aside): its sha256 and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.lock"}


def test_training_a_finished_run_again_says_so_in_seconds_and_changes_nothing(finished, tmp_path):
    run_dir, args = finished
    before = _digests(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["metrics"], status
    for command in ([sys.executable, "-m", "launch.cli", "train", *args, "--json", str(tmp_path / "t.json")],
                    [sys.executable, "-m", "eigenmap.train.worker", *args]):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
        assert done.returncode == 0, done.stderr[-3000:]
        assert "already finished: all 10 steps" in done.stdout and "resuming" not in done.stderr, done.stderr[-2000:]
        assert seconds < 25, f"{seconds:.0f} s: the rerun started the workers"
        assert _digests(run_dir) == before
    assert json.loads((tmp_path / "t.json").read_text())["step"] == 10


def test_probe_and_retrieve_reuse_finished_figures_and_the_cache_follows_the_weights_contents(
        finished, small_beton, small_val_beton, tmp_path):
    run_dir, _ = finished
    probe = ["probe", str(run_dir), "--train", str(small_beton), "--val", str(small_val_beton)]
    assert (first := eigenmap(*probe)).returncode == 0, first.stderr[-3000:]
    retrieve = ["retrieve", str(run_dir), "--database", str(small_beton), "--queries", str(small_val_beton),
                "--R", "20", "--repeats", "1", "--dims", "16", "64"]
    assert (done := eigenmap(*retrieve)).returncode == 0, done.stderr[-3000:]
    report, sidecar = run_dir / "eval" / "probe" / "train--val" / "probe.json", \
        run_dir / "eval" / "features" / "train" / "features.json"
    outputs = _digests(run_dir / "eval")
    for command in (probe, retrieve):
        again = eigenmap(*command)
        assert again.returncode == 0 and "reused" in again.stderr, again.stderr[-3000:]
    assert _digests(run_dir / "eval") == outputs
    assert "top-1" in again.stdout or "mAP" in again.stdout
    # a touched model.pt is the same weights: the arrays are reused, the probe is computed again on request
    os.utime(run_dir / "model.pt")
    assert (touched := eigenmap(*probe, "--recompute")).returncode == 0, touched.stderr[-3000:]
    assert "reused" not in touched.stderr and _digests(sidecar.parent) == outputs_of(outputs, "features/train/")
    # other weights: the arrays are extracted again and the figures are not reused
    weights = torch.load(run_dir / "model.pt", weights_only=True)
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim == 4)
    weights[name] = weights[name] * 1.5
    torch.save(weights, run_dir / "model.pt")
    assert (changed := eigenmap(*probe)).returncode == 0, changed.stderr[-3000:]
    assert "reused" not in changed.stderr
    meta = json.loads(sidecar.read_text())
    assert meta["weights"]["sha256"] == hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest()
    assert json.loads(report.read_text())["request"]["weights_sha256"] == meta["weights"]["sha256"]


def outputs_of(digests: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in digests.items() if k.startswith(prefix)}


def test_a_validation_set_that_is_the_training_images_prepared_again_is_refused_by_content(
        finished, small_beton, small_val_beton, tmp_path):
    from eigenmap.data import write_beton

    run_dir, _ = finished
    again = tmp_path / "again.beton"  # the training folder prepared a second time, at JPEG quality 80
    write_beton(small_beton.parent / "subset-train", again, max_resolution=40, jpeg_quality=80, workers=1)
    refused = eigenmap("probe", str(run_dir), "--train", str(small_beton), "--val", str(again), "--out",
                       str(tmp_path / "probe"))
    assert refused.returncode == 2, refused.stderr[-3000:]
    # JPEG at quality 80 moves a few of these 40 px images' signatures below the threshold
    count = int(re.search(r"(\d+) of 160 --val images \([\d.]+%\) are near-duplicates of --train images",
                          refused.stderr).group(1))
    assert count >= 150, refused.stderr[-2000:]
    assert "--allow-overlap" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "probe").exists()
    allowed = eigenmap("probe", str(run_dir), "--train", str(small_beton), "--val", str(again), "--out",
                       str(tmp_path / "probe"), "--allow-overlap", "--knn-only")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    overlap = json.loads((tmp_path / "probe" / "probe.json").read_text())["overlap"]
    assert (overlap["count"], overlap["leak"]) == (count, True) and len(overlap["examples"]) == 5
    # a held-out set passes with its overlap recorded (none), and retrieve reports duplicates without refusing
    held_out = eigenmap("probe", str(run_dir), "--train", str(small_beton), "--val", str(small_val_beton), "--out",
                        str(tmp_path / "held"), "--knn-only")
    assert held_out.returncode == 0, held_out.stderr[-3000:]
    assert json.loads((tmp_path / "held" / "probe.json").read_text())["overlap"]["count"] == 0
    retrieved = eigenmap("retrieve", str(run_dir), "--database", str(small_beton), "--queries", str(again),
                         "--R", "10", "--repeats", "1", "--dims", "64", "--no-baselines", "--no-funnel",
                         "--out", str(tmp_path / "r"))
    assert retrieved.returncode == 0, retrieved.stderr[-3000:]
    assert f"{count} of 160 --queries images" in retrieved.stderr and "near-duplicates" in retrieved.stderr
    assert json.loads((tmp_path / "r" / "retrieval.json").read_text())["overlap"]["count"] == count
