"""tools/bench_loader.py runs end to end and writes its figures (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_loader_writes_both_rates_their_ratio_and_peak_memory(imagenette_subset, tmp_path):
    figures = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "bench_loader.py"), "--data", str(imagenette_subset),
           "--resolution", "32", "--batch-size", "32", "--workers", "1", "--rounds", "1", "--json", str(figures)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert data["ffcv_pairs_per_second"] > 0 and data["twin_pairs_per_second"] > 0
    assert data["write_images"] == 160 and data["write_seconds"] > 0
    assert data["ffcv_peak_memory_mib"] > 0 and data["twin_peak_memory_mib"] > 0
    assert data["ffcv_pairs_per_cpu_second"] > 0 and data["ratio_per_cpu_second"] > 0
    assert "ratio ffcv / torchvision" in done.stdout


def test_bench_loader_rejects_a_missing_data_folder_with_a_clear_message(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "bench_loader.py"), "--data", str(tmp_path / "none")]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "none" in done.stderr and "ImageFolder" in done.stderr and "Traceback" not in done.stderr
