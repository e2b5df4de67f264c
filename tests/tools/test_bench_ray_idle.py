"""tools/bench_ray_idle.py runs end to end on a real embedded Ray cluster (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_bench_ray_idle_times_each_condition_and_leaves_no_ray_process_frozen(tmp_path):
    figures = tmp_path / "idle.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench_ray_idle.py"), "--cycles", "2", "--steps", "1",
           "--sched-idle", "--json", str(figures)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert set(data["steps_per_sec"]) == {"stopped", "running", "sched_idle"}
    assert all(len(v) == 2 and min(v) > 0 for v in data["steps_per_sec"].values())
    stopped = data["steps_per_sec"]["stopped"]
    for condition in ("running", "sched_idle"):
        ratios = [r / s for r, s in zip(data["steps_per_sec"][condition], stopped)]
        assert data["ratios_per_cycle"][condition] == pytest.approx(ratios)
    # the raylet, the GCS, the log monitor, Ray Train's actors and the worker were all found
    assert data["ray_processes"] >= 6
    assert "running / stopped" in done.stdout
    frozen = [p.info for p in psutil.process_iter(["pid", "name", "status"])
              if p.info["status"] == psutil.STATUS_STOPPED and "ray" in (p.info["name"] or "")]
    assert not frozen, f"Ray processes left frozen by SIGSTOP: {frozen}"
