"""tools/bench_extract.py runs end to end and writes its figures (no speed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


def test_bench_extract_reports_extraction_over_the_forward_rate(small_val_beton, tmp_path):
    figures = tmp_path / "extract.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench_extract.py"), "--data", str(small_val_beton),
           "--config", str(REPO / "configs" / "demo.yaml"), "--batch-size", "32", "--rounds", "2",
           "--json", str(figures)]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert len(data["forward_images_per_second"]) == len(data["extraction_images_per_second"]) == 2
    assert len(data["loader_images_per_second"]) == 2
    assert all(r > 0 for r in data["forward_images_per_second"] + data["extraction_images_per_second"]
               + data["loader_images_per_second"])
    assert 0 < data["shared_cores_bound"] < 1
    cpu = data["cpu_ms_per_image_median"]
    assert all(len(v) == 2 and all(ms > 0 for ms in v) for v in data["cpu_ms_per_image"].values())
    assert data["shared_cores_bound"] == pytest.approx(cpu["forward"] / (cpu["forward"] + cpu["loader"]))
    assert data["contention_cpu_fraction"] == pytest.approx(
        (cpu["extraction"] - cpu["forward"] - cpu["loader"]) / cpu["forward"])
    ratios = [e / f for e, f in zip(data["extraction_images_per_second"], data["forward_images_per_second"])]
    assert data["ratio_per_round"] == pytest.approx(ratios)
    assert all(t > 0 for t in data["first_batch_seconds"])
    steady = [s / f for s, f in zip(data["steady_images_per_second"], data["forward_images_per_second"])]
    assert data["steady_ratio_per_round"] == pytest.approx(steady)
    assert set(data["normalise_ms_per_batch"]) == {"flat_rows", "per_channel_broadcast"}
    assert all(ms > 0 for ms in data["normalise_ms_per_batch"].values())
    assert data["images_forward"] == 80 and "extraction / forward" in done.stdout
    assert data["keep_freed_memory"] is True  # glibc (Linux)
    assert {k: len(v) for k, v in data["page_faults_per_image"].items()} == {"forward": 2, "extraction": 2}


def test_bench_extract_rejects_a_missing_data_path(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "bench_extract.py"), "--data", str(tmp_path / "no")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
