"""The exit codes of a training run: one table for ``eigenmap train`` and ``python -m eigenmap.train.worker``.

``docs/exit-codes.md`` explains each one to users (a test keeps the two in step). The keys are
the run's outcome: ``status.json``'s ``status`` where the run got that far, ``"refused"`` when it
never started.
"""

from __future__ import annotations

__all__ = ["EXIT_CODES", "exit_code"]

EXIT_CODES = {
    "finished": 0,
    "failed": 1,  # an error, or Ray's restarts used up (dist.max_failures)
    "refused": 2,  # a bad config or argument, a refused resume, the run directory in use: nothing ran
    "nonfinite": 3,  # a non-finite loss or model state: stopped without saving
    "preempted": 75,  # SIGTERM: a checkpoint was saved; os.EX_TEMPFAIL, which schedulers read as "retry"
    "interrupted": 130,  # Ctrl-C (SIGINT); 128 + 2, what a shell reports for a command stopped by it
}


def exit_code(status: str) -> int:
    """The exit code of an outcome (an unknown one is a failure)."""
    return EXIT_CODES.get(status, EXIT_CODES["failed"])
