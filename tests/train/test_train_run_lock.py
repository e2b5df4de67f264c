"""The run directory's lock: one run at a time, stale locks of dead processes taken over.

Holders are real processes (a sleeping child, a child that has exited); a second run on a live
run directory through the real worker is in test_train_reliability.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from eigenmap.run import RunDir
from eigenmap.train.run_lock import RunLockError, acquire, release, run_lock


def _lock_of(pid: int, host: str | None = None, **extra) -> dict:
    return {"host": host or socket.gethostname(), "pid": pid, "process_start": psutil.Process(pid).create_time()
            if psutil.pid_exists(pid) else 1.0, "since": time.time() - 60, **extra}


@pytest.fixture()
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_the_lock_names_its_holder_and_is_released_on_every_way_out(tmp_path):
    with run_lock(tmp_path / "run") as me:
        held = json.loads(RunDir(tmp_path / "run").lock.read_text())
        assert held == me and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert not RunDir(tmp_path / "run").lock.exists()
    with pytest.raises(KeyError):
        with run_lock(tmp_path / "run"):
            raise KeyError("the run failed")
    assert not RunDir(tmp_path / "run").lock.exists()


def test_a_second_run_on_a_live_run_directory_is_refused_naming_the_holder(tmp_path, sleeper):
    RunDir(tmp_path).lock.write_text(json.dumps(_lock_of(sleeper)))
    with pytest.raises(RunLockError) as refused:
        acquire(tmp_path)
    message = str(refused.value)
    assert f"pid {sleeper} on host {socket.gethostname()} since " in message
    assert f"delete {RunDir(tmp_path).lock}" in message
    assert json.loads(RunDir(tmp_path).lock.read_text())["pid"] == sleeper  # untouched


def test_a_lock_held_from_another_host_is_refused(tmp_path):
    RunDir(tmp_path).lock.write_text(json.dumps(_lock_of(_dead_pid(), host="elsewhere-node-7")))
    with pytest.raises(RunLockError, match="on host elsewhere-node-7"):
        acquire(tmp_path)


@pytest.mark.parametrize("how", ["dead pid", "pid reused by another process", "unreadable and old"])
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, sleeper, how, caplog):
    path = RunDir(tmp_path).lock
    if how == "dead pid":
        path.write_text(json.dumps(_lock_of(_dead_pid())))
    elif how == "pid reused by another process":  # a live pid, but not the process that took the lock
        path.write_text(json.dumps({**_lock_of(sleeper), "process_start": 12345.0}))
    else:
        path.write_text("{")  # its creator died while writing it
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    with caplog.at_level("WARNING", logger="eigenmap.train.run_lock"):
        me = acquire(tmp_path)
    assert json.loads(path.read_text()) == me and "took over the stale lock" in caplog.text
    release(tmp_path, me)
    assert not path.exists()


def test_of_two_runs_recovering_one_stale_lock_only_the_first_wins(tmp_path):
    from eigenmap.train.run_lock import _take_over

    stale = _lock_of(_dead_pid())
    RunDir(tmp_path).lock.write_text(json.dumps(stale))
    first, second = {"pid": 1, "who": "first"}, {"pid": 2, "who": "second"}
    assert _take_over(RunDir(tmp_path).lock, stale, first)
    assert not _take_over(RunDir(tmp_path).lock, stale, second)  # it read the same stale lock, too late
    assert json.loads(RunDir(tmp_path).lock.read_text()) == first


def test_release_leaves_a_lock_someone_else_holds(tmp_path, sleeper):
    RunDir(tmp_path).lock.write_text(json.dumps(_lock_of(sleeper)))
    release(tmp_path, _lock_of(os.getpid()))
    assert RunDir(tmp_path).lock.exists()
