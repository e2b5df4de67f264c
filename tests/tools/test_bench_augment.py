"""tools/bench_augment.py runs end to end on the CPU and writes its figures (no speed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench_augment.py"


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--batch", "2", "--resolution", "32", "--warmup", "1",
           "--repeats", "2", *extra]
    return subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True,
                          text=True, timeout=300)


def test_bench_writes_times_speedup_stages_traffic_and_equality(tmp_path):
    figures = tmp_path / "augment.json"
    done = _run(tmp_path, "--json", str(figures))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert data["device"].startswith("cpu") and data["mode"] == "eager"
    assert data["ms_per_call"] == data["eager_ms_per_call"] > 0 and data["old_ms_per_call"] > 0
    assert data["speedup"] == pytest.approx(data["old_ms_per_call"] / data["ms_per_call"])
    assert data["compiled_ms_per_call"] is None  # the CPU default: no compilation
    assert set(data["stages"]) == {"to_float", "jitter", "grayscale", "blur", "solarise_normalise"}
    assert all(v > 0 for v in data["stages"].values())
    new, old = data["traffic"]["new_eager"], data["traffic"]["old"]
    assert 0 < new["kernels"] < old["kernels"] and 0 < new["gb"] < old["gb"]
    assert 0 <= data["max_abs_diff"]["eager"] <= 1e-5
    assert "speedup" in done.stdout and "jitter" in done.stdout


@pytest.mark.slow
def test_bench_overlap_times_the_step_alone_serial_and_ahead(tmp_path):
    figures = tmp_path / "augment.json"
    done = _run(tmp_path, "--overlap", "--overlap-arch", "resnet18", "--overlap-steps", "2", "--json", str(figures))
    assert done.returncode == 0, done.stderr[-3000:]
    overlap = json.loads(figures.read_text())["overlap"]
    assert overlap["arch"] == "resnet18" and overlap["steps"] == 2
    assert overlap["step_ms"] > 0 and overlap["serial_ms"] > 0 and overlap["ahead_ms"] > 0


def test_bench_rejects_a_bad_size_naming_it(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--batch", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--batch 0" in done.stderr and "Traceback" not in done.stderr
