"""How a stop request gets in: a SIGTERM or a Ctrl-C to this process, or one to the launcher that
writes the run's stop file. Real signals to the test process itself; a real SIGTERM to a training
worker is in test_train_reliability.py, a real Ctrl-C below and in tests/launch/test_launch_interrupt.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from eigenmap.run import RunDir
from eigenmap.train import preempt
from eigenmap.train.exit_codes import EXIT_CODES
from eigenmap.train.preempt import (INTERRUPTED, PREEMPTED, REPEAT_SECONDS, StopRequest,
                                    clear_stop_request, stop_on_signals)
from worker_helpers import worker_command, worker_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_stop_left():
    preempt._forget()
    yield
    preempt._forget()  # process-wide: the next test starts without a request


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler at its next bytecode boundary


def test_a_sigterm_sets_the_request_instead_of_killing_and_the_handlers_are_restored(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopRequest(tmp_path)
    with stop_on_signals() as installed:
        assert installed and not stop.requested()
        _deliver(signal.SIGTERM)
        assert stop.reason() == PREEMPTED
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_first_ctrl_c_asks_to_stop_and_a_second_one_aborts(tmp_path, capfd):
    stop = StopRequest(tmp_path)
    with stop_on_signals(announce=True):
        _deliver(signal.SIGINT)
        assert stop.reason() == INTERRUPTED
        _deliver(signal.SIGINT)  # within REPEAT_SECONDS: the same press (torchrun forwards the terminal's)
        time.sleep(REPEAT_SECONDS + 0.1)
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
    assert capfd.readouterr().err.count("Ctrl-C: stopping at the next log or checkpoint step") == 1


def test_an_inner_stop_on_signals_keeps_the_outer_handlers(tmp_path):
    with stop_on_signals(tmp_path):
        outer = signal.getsignal(signal.SIGINT)
        with stop_on_signals() as installed:
            assert installed and signal.getsignal(signal.SIGINT) is outer
        _deliver(signal.SIGINT)
    assert RunDir(tmp_path).stop_file.read_text() == INTERRUPTED


@pytest.mark.parametrize("signum,reason", [(signal.SIGTERM, PREEMPTED), (signal.SIGINT, INTERRUPTED)])
def test_a_signal_to_the_launcher_writes_the_stop_file_with_its_reason(signum, reason, tmp_path):
    with stop_on_signals(tmp_path):
        _deliver(signum)
    assert RunDir(tmp_path).stop_file.read_text() == reason
    preempt._forget()  # a worker is another process: it sees only the file
    assert StopRequest(tmp_path).reason() == reason
    clear_stop_request(tmp_path)  # the next start forgets it
    assert not StopRequest(tmp_path).requested()


def test_a_stop_file_written_by_hand_is_a_preemption(tmp_path):
    RunDir(tmp_path).stop_file.touch()
    assert StopRequest(tmp_path).reason() == PREEMPTED


def test_every_exit_code_is_documented():
    doc = (REPO / "docs" / "exit-codes.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", doc, flags=re.M))
    assert {int(code): name for code, name in rows.items()} == {code: name for name, code in EXIT_CODES.items()}


def _start_in_own_session(config: Path, *args: str, log: Path) -> subprocess.Popen:
    """The plain worker as a terminal's foreground job: the leader of its own process group."""
    with open(log, "a") as out:
        return subprocess.Popen(worker_command(config, *args), cwd=REPO, env=worker_env(), stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _ctrl_c_after(proc: subprocess.Popen, run_dir: Path, log: Path, step: int, seconds: float = 180) -> None:
    """Ctrl-C to ``proc``'s process group once ``step`` is logged; waits for the end."""
    deadline = time.monotonic() + seconds
    path = run_dir / "metrics.jsonl"
    try:
        while not (path.is_file() and max((json.loads(r)["step"] for r in path.read_text().splitlines()),
                                          default=0) >= step):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"step {step} not logged in {seconds} s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ctrl_c_to_the_plain_worker_saves_a_checkpoint_exits_130_and_the_same_command_resumes(tiny_config,
                                                                                              tmp_path):
    """Ctrl-C as a terminal sends it (to the process group) to ``python -m eigenmap.train.worker``,
    twice: the second start resumes from the first one's checkpoint, and stops again."""
    run_dir, log = tmp_path / "run", tmp_path / "worker.log"
    args = ["data.train_path=synthetic", f"train.run_dir={run_dir}", "train.epochs=40", "train.log_every_steps=1",
            "train.checkpoint_every_steps=1000", "train.max_steps=400", "train.progress_bar=true"]
    proc = _start_in_own_session(tiny_config, *args, log=log)
    _ctrl_c_after(proc, run_dir, log, 2)
    text = log.read_text()
    assert "\r" not in text and "train: step 2/400" in text  # a log file gets the bar as plain lines
    assert proc.returncode == EXIT_CODES["interrupted"], text[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    stopped = status["step"]
    checkpoint = run_dir / "checkpoints" / f"step_{stopped:08d}"
    assert status["status"] == "interrupted" and 2 <= stopped < 400, status
    assert f"no checkpoint in {run_dir}: starting at step 0" in text
    assert "Ctrl-C: stopping at the next log or checkpoint step" in text
    assert f"interrupted: stopped on Ctrl-C (SIGINT) at step {stopped} with a checkpoint saved" in text
    assert f"the latest checkpoint is step {stopped} ({checkpoint})" in text
    assert f"to resume, run the same command again: python -m eigenmap.train.worker {tiny_config} " in text
    assert "Traceback" not in text and not (run_dir / "run.lock").exists()

    proc = _start_in_own_session(tiny_config, *args, log=log)
    _ctrl_c_after(proc, run_dir, log, stopped + 2)
    text = log.read_text()
    assert proc.returncode == EXIT_CODES["interrupted"], text[-3000:]
    assert f"resuming from step {stopped} ({checkpoint})" in text
    attempts = [json.loads(line)["resumed_from_step"] for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert attempts == [None, stopped]
    assert json.loads((run_dir / "status.json").read_text())["step"] >= stopped + 2
