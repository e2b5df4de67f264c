"""One run at a time per run directory: a lock file naming its holder.

Two runs on one run directory would share ``config.yaml``, ``metrics.jsonl``, the checkpoints
and Ray's storage, and each would delete the other's ``status.json``. The process that starts a
run (the ``eigenmap train`` driver, or rank 0 of ``python -m eigenmap.train.worker``) takes
``RUN_DIR/run.lock`` before anything is written there and removes it on every way out; Ray's
restarts of the workers run under the driver's lock. The lock file is created with
``O_CREAT | O_EXCL`` (atomic, NFS included) and holds the holder's host, pid, process start
time and the time it was taken.

A second run is refused with a message naming the holder. A lock whose holder is gone (same
host, and no process with that pid, or one started at another time: the pid was reused) is
stale: the next run takes it over with a warning. Two runs recovering the same stale lock race
on an ``flock`` of the file and a re-read of its contents, so only one wins. A lock held from
another host cannot be checked from here: the message says how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Optional, Union

import psutil

from eigenmap.run import RunDir

__all__ = ["RunLockError", "run_lock", "acquire", "release"]

log = logging.getLogger(__name__)

_UNREADABLE_GRACE_SECONDS = 30.0  # a lock file still being written by its creator is briefly empty


class RunLockError(RuntimeError):
    """The run directory is in use by another run (or its lock cannot be taken)."""


def _process_start(pid: int) -> Optional[float]:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _me() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": _process_start(pid), "since": time.time()}


def _describe(holder: dict, path: Path) -> str:
    since = datetime.datetime.fromtimestamp(holder.get("since", 0)).isoformat(sep=" ", timespec="seconds")
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {since} (lock file {path})"


def _is_stale(holder: dict) -> bool:
    """Only a holder on this host can be seen to be gone."""
    if holder.get("host") != socket.gethostname():
        return False
    start = _process_start(int(holder.get("pid", -1)))
    if start is None:
        return True
    recorded = holder.get("process_start")
    return recorded is not None and abs(start - recorded) > 1.0  # pid reused by another process


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _take_over(path: Path, stale: Optional[dict], me: dict) -> bool:
    """Replace the stale lock ``stale`` (None: unreadable) by ``me``; False when another run
    got there first."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one recoverer at a time
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return False  # removed and re-created since we opened it
        except FileNotFoundError:
            return False  # removed since we opened it
        with os.fdopen(os.dup(fd), "r+") as f:
            f.seek(0)
            try:
                current = json.loads(f.read())
            except ValueError:
                current = None
            if current != stale:
                return False  # another run took it over (or it changed): look again
            f.seek(0)
            f.truncate()
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        os.close(fd)


def acquire(run_dir: Union[str, os.PathLike]) -> dict:
    """Take ``run_dir``'s lock (creating the directory); returns what the lock file holds.

    Raises:
        RunLockError: another live run holds it, naming its host, pid and start.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = RunDir(run_dir).lock
    me = _me()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)  # None: empty or garbage
            if holder is None and _just_created(path):
                raise RunLockError(f"run directory '{run_dir}' is being locked by another run right now "
                                   f"(lock file {path}); try again in a minute") from None
            if holder is not None and not _is_stale(holder):
                raise RunLockError(
                    f"run directory '{run_dir}' is in use by another run: {_describe(holder, path)}. Wait for it "
                    f"to end or use another train.run_dir; if you know that run is gone (e.g. its host "
                    f"crashed), delete {path}") from None
            if _take_over(path, holder, me):
                log.warning("run directory '%s': took over the stale lock of %s: that process is gone", run_dir,
                            _describe(holder, path) if holder else f"an unreadable lock file {path}")
                return me
            continue  # it vanished, or another run recovered it first: look again
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        return me
    raise RunLockError(f"could not take the lock {path}: other runs keep taking it")


def _just_created(path: Path) -> bool:
    """An unreadable lock file younger than a grace period: its creator may still be writing it."""
    try:
        return time.time() - path.stat().st_mtime < _UNREADABLE_GRACE_SECONDS
    except FileNotFoundError:
        return False


def release(run_dir: Union[str, os.PathLike], me: dict) -> None:
    """Remove the lock if it is still ours (a run that took over a stale one keeps it)."""
    path = RunDir(run_dir).lock
    if _read(path) == me:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(run_dir: Union[str, os.PathLike]) -> Iterator[dict]:
    """Hold ``run_dir``'s lock for the body; released on every way out (exceptions included)."""
    me = acquire(run_dir)
    try:
        yield me
    finally:
        release(run_dir, me)
