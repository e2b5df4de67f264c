"""Ctrl-C to an `eigenmap train` on the embedded cluster, as a terminal sends it: SIGINT to the
whole process group (the driver and the Ray processes it started).

- the first one stops every worker at the same step with a checkpoint (exit 130), and the same
  command resumes from that step, saying so;
- a second one aborts at once, keeping the last checkpoint saved;
- the console, redirected to a file, is plain text: no carriage returns, no colour codes, no
  advice of Ray's that does not apply.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eigenmap.train.checkpoint_files import is_complete
from eigenmap.train.exit_codes import EXIT_CODES
from launch_helpers import REPO, cli_env, run_metrics

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ARGS = ["data.train_path=synthetic", "train.epochs=40"]


def _start(config: Path, run_dir: Path, log: Path, *overrides: str) -> subprocess.Popen:
    """`eigenmap train` as a terminal's foreground job (the leader of its own process group),
    its console redirected to ``log``, Ray's log de-duplication as a user has it."""
    env = cli_env()
    env.pop("RAY_DEDUP_LOGS")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "launch.cli", "train", str(config), *ARGS,
                                 f"train.run_dir={run_dir}", *overrides], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait(proc: subprocess.Popen, log: Path, done, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert proc.poll() is None, f"ended before {what}: " + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what} in {seconds} s: " + log.read_text()[-3000:]
        time.sleep(0.2)


def _finish(proc: subprocess.Popen, seconds: float = 180) -> None:
    try:
        proc.wait(timeout=seconds)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _worker_pids(run_dir: Path) -> set[int]:
    return {json.loads(p.read_text())["pid"] for p in (run_dir / "workers").glob("rank*.json")}


def _assert_gone(pids: set[int], seconds: float = 30) -> None:
    """The Ray workers (each in a session of its own, so not in the group) end with the run."""
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.5)
    assert not alive, f"Ray workers outlived the run: {alive}"


def _assert_plain(console: str) -> None:
    assert "\r" not in console and "\x1b" not in console, [line for line in console.splitlines()
                                                           if "\r" in line or "\x1b" in line][:3]
    assert "RunConfig(name)" not in console  # Ray's advice for a user who did not mean to resume


def test_ctrl_c_to_the_group_saves_a_checkpoint_exits_130_and_the_same_command_resumes(launch_config, tmp_path):
    run_dir, first_log, second_log = tmp_path / "run", tmp_path / "first.log", tmp_path / "second.log"
    overrides = ("train.max_steps=40",)
    proc = _start(launch_config, run_dir, first_log, *overrides)
    try:
        _wait(proc, first_log, lambda: max((r["step"] for r in run_metrics(run_dir)), default=0) >= 3, "step 3")
        os.killpg(proc.pid, signal.SIGINT)
    finally:
        _finish(proc)
    console = first_log.read_text()
    assert proc.returncode == EXIT_CODES["interrupted"], console[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    stopped = status["step"]
    checkpoint = run_dir / "checkpoints" / f"step_{stopped:08d}"
    assert status["status"] == "interrupted" and 3 <= stopped < 40 and is_complete(checkpoint), status
    assert f"no checkpoint in {run_dir}: starting at step 0" in console
    assert "Ctrl-C: stopping at the next log or checkpoint step" in console
    assert f"interrupted: stopped on Ctrl-C (SIGINT) at step {stopped} with a checkpoint saved" in console
    assert f"the latest checkpoint is step {stopped} ({checkpoint})" in console
    assert f"to resume, run the same command again: eigenmap train {launch_config} {' '.join(ARGS)}" in console
    assert "Traceback" not in console and not (run_dir / "run.lock").exists()
    _assert_gone(_worker_pids(run_dir))
    _assert_plain(console)

    proc = _start(launch_config, run_dir, second_log, *overrides)
    _finish(proc, 300)
    console = second_log.read_text()
    assert proc.returncode == EXIT_CODES["finished"], console[-3000:]
    assert f"resuming from step {stopped} ({checkpoint})" in console
    attempts = [json.loads(line)["resumed_from_step"] for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert attempts == [None, stopped]
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 40)
    _assert_plain(console)


def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(launch_config, tmp_path):
    """Checks at each epoch's end only (32 steps): the second Ctrl-C comes before the first takes effect."""
    run_dir, log = tmp_path / "run", tmp_path / "console.log"
    proc = _start(launch_config, run_dir, log, "data.synthetic_images=1024", "train.log_every_steps=1000",
                  "train.checkpoint_every_steps=1000", "train.max_steps=200")
    first = run_dir / "checkpoints" / f"step_{32:08d}"
    try:
        _wait(proc, log, lambda: is_complete(first), "checkpoint at step 32")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.5)  # a repeat within a second counts as the same press
        os.killpg(proc.pid, signal.SIGINT)
    finally:
        _finish(proc, 60)
    console = log.read_text()
    assert proc.returncode == EXIT_CODES["interrupted"], console[-3000:]
    assert "aborted at once on a second Ctrl-C" in console
    assert f"the latest checkpoint is step 32 ({first})" in console and "Traceback" not in console
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == [first.name] and is_complete(first)
    assert not (run_dir / "status.json").exists() and not (run_dir / "run.lock").exists()
    _assert_gone(_worker_pids(run_dir))
