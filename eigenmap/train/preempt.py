"""Stop requests: SIGTERM and Ctrl-C save a checkpoint at the next step boundary, then the run exits.

SLURM, Kubernetes and spot instances announce the end of a job with SIGTERM and kill it a
grace period later; a person at a terminal presses Ctrl-C (SIGINT). Either way the run
finishes its current step, saves a checkpoint, writes ``status.json`` with status
``"preempted"`` (SIGTERM) or ``"interrupted"`` (Ctrl-C) and exits 75 or 130
(:mod:`eigenmap.train.exit_codes`); the same command started again resumes from that
checkpoint. A second Ctrl-C aborts at once: the checkpoint of this stop is not written, the
last one saved stays the latest. A repeat within :data:`REPEAT_SECONDS` of the first counts as
the same press: torchrun forwards the terminal's Ctrl-C to its workers, which got it already.

Two ways in:

- a signal delivered to a worker process sets this process's request (:func:`stop_on_signals`,
  main thread only: the plain ``python -m eigenmap.train.worker`` and torchrun);
- the launcher that got the signal (the ``eigenmap train`` driver; Ray Train runs the training
  function in a thread that cannot install signal handlers) also writes the stop file
  ``RUN_DIR/stop_requested``, holding the reason, which the workers look at
  (``stop_on_signals(run_dir)``).

The worker loop reads :meth:`StopRequest.reason` at every log and checkpoint step and agrees on
it across ranks in its one collective of flags; a world of one looks at every step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

from eigenmap.durable import atomic_write_text
from eigenmap.run import RunDir

__all__ = ["PREEMPTED", "INTERRUPTED", "REPEAT_SECONDS", "StopRequest", "stop_on_signals",
           "clear_stop_request"]

PREEMPTED, INTERRUPTED = "preempted", "interrupted"  # the reasons, as status.json names them
REPEAT_SECONDS = 1.0
_SIGNALS = {signal.SIGTERM: PREEMPTED, signal.SIGINT: INTERRUPTED}
CTRL_C_NOTICE = ("Ctrl-C: stopping at the next log or checkpoint step, with a checkpoint; press Ctrl-C again to "
                 "abort at once (the last checkpoint saved is kept)\n")

# a signal is process-wide by nature: so is the request it makes
_reason: Optional[str] = None
_first_ctrl_c: Optional[float] = None  # time.monotonic() of the first SIGINT


def _forget() -> None:
    """Drop this process's request (a new request, e.g. the next test, starts clean)."""
    global _reason, _first_ctrl_c
    _reason, _first_ctrl_c = None, None


def _handler(stop_file: Optional[Path], announce: bool):
    def on_signal(signum, frame) -> None:
        global _reason, _first_ctrl_c
        if signum == signal.SIGINT:
            now = time.monotonic()
            if _first_ctrl_c is not None:
                if now - _first_ctrl_c > REPEAT_SECONDS:
                    raise KeyboardInterrupt  # the second press: abort at once
                return
            _first_ctrl_c = now
            if announce:
                os.write(2, CTRL_C_NOTICE.encode())  # not print: the main thread may be inside a write to stderr
        if _reason is None:  # the first request's reason holds
            _reason = _SIGNALS[signal.Signals(signum)]
        if stop_file is not None:
            try:
                atomic_write_text(stop_file, _reason)
            except OSError as e:  # the workers will not see it: say so rather than raise into the main code
                os.write(2, f"could not write the stop file {stop_file} ({e}): the workers do not stop\n".encode())
    on_signal.stops_the_run = True  # marks it as ours: see stop_on_signals
    return on_signal


@contextlib.contextmanager
def stop_on_signals(run_dir: Union[str, os.PathLike, None] = None, *, announce: bool = False) -> Iterator[bool]:
    """During the body SIGTERM and a first Ctrl-C ask the run to stop instead of killing this
    process; a second Ctrl-C raises ``KeyboardInterrupt``. With ``run_dir`` the request is also
    written to the run's stop file, for workers in other processes. ``announce``: say on stderr
    what a Ctrl-C does when it comes (by one process of a job).

    Main thread only: elsewhere nothing is installed (yields whether it was); the previous
    handlers are put back on the way out. Inside an outer ``stop_on_signals`` it leaves the
    outer one's handlers in place.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    if getattr(signal.getsignal(signal.SIGINT), "stops_the_run", False):
        yield True
        return
    handler = _handler(RunDir(run_dir).stop_file if run_dir is not None else None, announce)
    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def clear_stop_request(run_dir: Union[str, os.PathLike]) -> None:
    """Forget the stop file left by the previous start (call when a run starts, under its lock;
    a signal this process already got still counts)."""
    (RunDir(run_dir).stop_file).unlink(missing_ok=True)


class StopRequest:
    """Whether this run has been asked to stop, and why: this process got a signal, or the run's
    stop file exists. Cheap: a flag and one ``open``."""

    def __init__(self, run_dir: Union[str, os.PathLike]):
        self.path = RunDir(run_dir).stop_file

    def reason(self) -> Optional[str]:
        """``INTERRUPTED``, ``PREEMPTED`` or None. A stop file without a reason in it (written by
        hand or by another tool: ``touch RUN/stop_requested``) is a preemption."""
        if _reason is not None:
            return _reason
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return INTERRUPTED if text == INTERRUPTED else PREEMPTED

    def requested(self) -> bool:
        return self.reason() is not None
