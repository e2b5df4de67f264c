"""The start and the end of a training run, the same for ``eigenmap train`` and ``python -m eigenmap.train.worker``.

- :func:`starting_run`: before any worker trains, the process that starts the run takes the run
  directory's lock, applies the resume rules (:func:`eigenmap.train.resume.check_resume`) and
  forgets the previous start's stop file; the lock is released on every way out.
- :func:`finished_run`: a run that has already trained its whole plan is left as it is: the
  entry points return its ``status.json`` in seconds, start no worker, and write nothing.
- :func:`start_sentence`: what this start does with the run directory, said once by rank 0.
- :func:`report_end`: the console's last lines (how the run ended; after a stop, the checkpoint
  kept and the command that resumes it) and the exit code (:mod:`eigenmap.train.exit_codes`).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Iterator, Optional, Union

from eigenmap.config import Config, ConfigError
from eigenmap.run import RunDir
from eigenmap.train.checkpoint_files import checkpoint_step, find_latest
from eigenmap.train.exit_codes import exit_code
from eigenmap.train.preempt import INTERRUPTED, PREEMPTED, clear_stop_request
from eigenmap.train.resume import check_resume
from eigenmap.train.run_lock import RunLockError, run_lock

__all__ = ["REFUSALS", "starting_run", "finished_run", "start_sentence", "command_line", "report_end", "ABORTED",
           "OUTSIDE_TRAINING"]

# what an entry point reports as "refused" (exit 2): nothing of the run was started
REFUSALS = (ConfigError, RunLockError)
ABORTED = "aborted at once on a second Ctrl-C: no checkpoint was written for this stop"
OUTSIDE_TRAINING = "stopped by Ctrl-C outside training (while the run started or shut down)"


@contextlib.contextmanager
def starting_run(cfg: Config, *, allow_config_change: bool = False, lead: bool = True) -> Iterator[None]:
    """Hold the run for the body: lock, resume check, stop file cleared.

    Args:
        cfg: the resolved, checked config (:func:`eigenmap.train.checks.load_train_config`).
        allow_config_change: ``--allow-config-change``: a changed meaning key is a warning.
        lead: this process starts the run (the launcher, the plain worker, torchrun's rank 0);
            the others only check the resume rules, quietly.

    Raises:
        RunLockError: another live run holds the run directory.
        ConfigError: a resume the rules refuse.
    """
    run_dir = cfg.train.run_dir
    with run_lock(run_dir) if lead else contextlib.nullcontext():
        check_resume(cfg, allow_config_change=allow_config_change, report=lead)
        if lead:
            clear_stop_request(run_dir)
        yield


def finished_run(cfg: Config) -> Optional[dict]:
    """The summary of a run that has already trained all ``cfg.derived.total_steps`` steps, or
    None when there is work left.

    Finished means: ``status.json`` says "finished" at the planned step, the latest checkpoint is
    of that step, and the final weights (``model.pt``) are there. Call inside
    :func:`starting_run` (which has refused a changed meaning): rerunning the same command on
    such a run would only start the workers to load the checkpoint, train nothing, and write the
    weights and ``status.json`` again (their metrics emptied).
    """
    run = RunDir(cfg.train.run_dir)
    status = run.read_status()
    total = cfg.derived.total_steps
    if not status or status.get("status") != "finished" or total is None or status.get("step") != total:
        return None
    latest = find_latest(run.checkpoints, warn=False)
    if latest is None or checkpoint_step(latest) != total or not run.model.is_file():
        return None
    return {**status, "run_dir": str(run.path),
            "message": f"already finished: all {total:,} steps of the plan were trained ({run.model}); nothing was "
                       "changed. To train longer, set train.max_steps (or train.epochs) higher and pass "
                       "--allow-config-change; for a new run, another train.run_dir"}


def _last_logged_step(run_dir: Path) -> int:
    """The highest step in ``metrics.jsonl`` (0 when none; a line cut short is skipped)."""
    path, last = RunDir(run_dir).metrics, 0
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                last = max(last, int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                pass
    return last


def start_sentence(run_dir: Union[str, Path], checkpoint: Optional[Path], step: int) -> str:
    """What a start does: ``"resuming from step N (CHECKPOINT)"`` or ``"no checkpoint in RUN:
    starting at step 0"``, and how many logged steps will be redone when ``metrics.jsonl`` holds
    steps past the start (work of an earlier attempt whose checkpoint was not saved).

    Call before the run's logger cuts ``metrics.jsonl`` back to ``step``.
    """
    run_dir = Path(run_dir)
    last = _last_logged_step(run_dir)
    if checkpoint is None:
        said = f"no checkpoint in {run_dir}: starting at step 0"
        redo = f"the {last} steps it logged before ({RunDir(run_dir).metrics.name}) will be redone" if last > 0 else ""
    else:
        said = f"resuming from step {step} ({checkpoint})"
        redo = f"the {last - step} steps logged after it (to step {last}) will be redone" if last > step else ""
    return f"{said}; {redo}" if redo else said


def command_line(prog: str, *args: str) -> str:
    """The command a user types again, quoted for a POSIX shell."""
    return " ".join([prog, *(shlex.quote(a) for a in args)])


def report_end(prog: str, summary: dict, *, run_dir: Union[str, Path, None], rerun: str, details: str = "") -> int:
    """Print how the run ended and return its exit code.

    After a stop (``preempted``, ``interrupted``) of a run whose ``run_dir`` is known, a second
    line names the checkpoint a rerun resumes from (or says that there is none) and the
    command ``rerun`` that does it.
    """
    status = summary["status"]
    out = sys.stdout if status == "finished" else sys.stderr
    print(f"{prog}: {status}: {summary.get('message', '')}{f' ({details})' if details else ''}", file=out,
          flush=True)
    if status in (PREEMPTED, INTERRUPTED) and run_dir is not None:
        kept = find_latest(RunDir(run_dir).checkpoints, warn=False)
        where = (f"the latest checkpoint is step {checkpoint_step(kept)} ({kept})" if kept is not None
                 else "no checkpoint was saved: a rerun starts at step 0")
        print(f"{prog}: {where}; to resume, run the same command again: {rerun}", file=out, flush=True)
    return exit_code(status)
