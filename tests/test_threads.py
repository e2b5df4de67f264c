"""CPU threads sized to what the process may use, waiting threads that sleep, and a console that
says when a step runs far below its own rate (issue 33, item 8)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from retrieval.progress import Progress, SlowdownWatch
from eigenmap.threads import available_cpus, cgroup_cpu_quota, set_torch_threads

REPO = Path(__file__).resolve().parents[1]


def test_a_fresh_process_that_imports_eigenmap_gets_sleeping_openmp_waits_unless_the_user_chose():
    code = "import eigenmap.eval.linear_probe, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    ours = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert ours.stdout.strip() == "PASSIVE", ours.stderr[-2000:]
    theirs = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True)
    assert theirs.stdout.strip() == "ACTIVE", theirs.stderr[-2000:]


def test_a_cgroup_quota_is_read_in_both_layouts(tmp_path):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path / "v2") == 1.5
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "v2") is None
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path / "v1") == 2.0
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path / "v1") is None and cgroup_cpu_quota(tmp_path / "none") is None


def test_torch_threads_never_exceed_the_cpus_this_process_may_use():
    before = torch.get_num_threads()
    try:
        assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
        assert set_torch_threads(available_cpus() + 63) == available_cpus() == torch.get_num_threads()
        assert set_torch_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_a_unit_far_slower_than_the_earlier_ones_is_said_once_a_minute(caplog):
    watch = SlowdownWatch("linear probe", "epoch", logger=logging.getLogger("eigenmap.test_slow"))
    with caplog.at_level(logging.WARNING, logger="eigenmap.test_slow"):
        assert [watch.observe(s) for s in (0.2, 0.25, 0.2, 0.9)] == [None] * 4  # 4.5x: within the factor
        said = watch.observe(14.0)
        assert watch.observe(14.0) is None  # said already, within the minute
    assert said.startswith("linear probe: epoch 5 took 14 s, 62x the median of the earlier ones (0.225 s)")
    assert "CPUs available to this process" in said and [r.getMessage() for r in caplog.records] == [said]


def test_progress_warns_when_a_unit_falls_far_below_the_loops_own_rate(caplog):
    logger = logging.getLogger("eigenmap.test_progress_slow")
    progress = Progress(6, "kNN", unit="block", terminal=False, logger=logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(4):
            progress.update(1)
        time.sleep(0.3)
        progress.update(1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("kNN: block 5 took 0.3")
