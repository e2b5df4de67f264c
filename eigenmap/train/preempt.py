"""Preemption: SIGTERM saves a checkpoint at the next step boundary, then the run exits 75.

SLURM, Kubernetes and spot instances announce the end of a job with SIGTERM and kill it a
grace period later. A run asked to stop that way finishes its current step, saves a
checkpoint, writes ``status.json`` with status ``"preempted"`` and exits with
:data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "try again"); the same command started again
resumes from that checkpoint.

Two ways in:

- a SIGTERM delivered to a worker process sets this process's flag (:func:`sigterm_sets_stop_flag`,
  main thread only: the plain ``python -m eigenmap.train.worker`` and torchrun);
- the launcher that got the SIGTERM (the ``eigenmap train`` driver; Ray Train runs the training
  function in a thread that cannot install signal handlers) writes the stop file
  ``RUN_DIR/stop_requested``, which the workers look at (:func:`forward_sigterm_to_run`).

The worker loop reads :meth:`StopRequest.requested` at every log and checkpoint step and
agrees on it across ranks in its one collective of flags; a world of one looks at every step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Union

from eigenmap.run_layout import RunDir

__all__ = ["EXIT_PREEMPTED", "EXIT_CODES", "StopRequest", "sigterm_sets_stop_flag",
           "forward_sigterm_to_run", "clear_stop_request"]

EXIT_PREEMPTED = 75  # os.EX_TEMPFAIL: the job should be retried, and resumes where it stopped
# exit code of `eigenmap train` and of the plain worker by the run's status (other failures: 1)
EXIT_CODES = {"finished": 0, "nonfinite": 3, "preempted": EXIT_PREEMPTED}

_signalled = threading.Event()  # set by the handler: a signal is process-wide by nature


def _on_sigterm(signum, frame) -> None:
    _signalled.set()  # no logging here: the loop reports it at the step where it acts


@contextlib.contextmanager
def _handler(handler) -> Iterator[bool]:
    """``handler`` for SIGTERM during the body (main thread only; yields whether installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous)


def sigterm_sets_stop_flag() -> contextlib.AbstractContextManager[bool]:
    """During the body a SIGTERM to this process asks the run to stop (instead of killing it)."""
    return _handler(_on_sigterm)


def forward_sigterm_to_run(run_dir: Union[str, os.PathLike]) -> contextlib.AbstractContextManager[bool]:
    """During the body a SIGTERM to this launcher process writes the run's stop file, which
    every worker sees at its next log or checkpoint step."""
    path = RunDir(run_dir).stop_file

    def forward(signum, frame) -> None:
        _signalled.set()
        path.touch()

    return _handler(forward)


def clear_stop_request(run_dir: Union[str, os.PathLike]) -> None:
    """Forget the stop file left by the previous start (call when a run starts, under its lock;
    a SIGTERM this process already got still counts)."""
    RunDir(run_dir).stop_file.unlink(missing_ok=True)


class StopRequest:
    """Whether this run has been asked to stop: this process got a SIGTERM, or the run's stop
    file exists. Cheap: a flag and one ``stat``."""

    def __init__(self, run_dir: Union[str, os.PathLike]):
        self.path = RunDir(run_dir).stop_file

    def requested(self) -> bool:
        return _signalled.is_set() or self.path.exists()
