"""Every file and folder of a run directory, named in one place.

A run directory (``train.run_dir``) holds::

    config.yaml          the resolved config (written by rank 0 of the worker)
    status.json          how the last start ended (written by rank 0 of the worker only;
                         launchers read it)
    attempts.jsonl       one line per worker-group start (rank 0 of the worker)
    metrics.jsonl        one line per log step (rank 0's RunLogger)
    tensorboard/         TensorBoard events (rank 0's RunLogger)
    checkpoints/step_*/  kept checkpoints (the checkpoint store)
    workers/rank*.json   which process and host runs each rank
    run.lock             held while a run uses the directory
    stop_requested       a launcher's request that the workers stop at the next step boundary
    model.pt, encoder.pt the trained weights of a finished run (or `eigenmap export`)
    eval/features/NAME/  a dataset's arrays through this run's model (`eigenmap extract`)
    eval/probe/PAIR/     linear probe and kNN figures of one (train, val) pair
    eval/retrieval/ARRAY/PAIR/  a retrieval report of one (database, queries) pair
    report/              the run report (`eigenmap report`)
    demo.json            what `eigenmap demo` made the run from

Nothing here imports torch or the rest of the package, so every layer can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["RunDir", "pair_name"]


def pair_name(first: str, second: str) -> str:
    """The folder name of an evaluation of two sets, e.g. ``train--val``."""
    return f"{first}--{second}"


class RunDir:
    """The paths of one run directory (nothing is created by naming it)."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # training
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def attempts(self) -> Path:
        return self.path / "attempts.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def workers(self) -> Path:
        return self.path / "workers"

    def worker_file(self, rank: int, kind: str = "") -> Path:
        """``workers/rank{rank}.json`` (``kind`` "ray": ``rank{rank}.ray.json``, the Ray node of the rank)."""
        return self.workers / f"rank{rank}{'.' + kind if kind else ''}.json"

    @property
    def lock(self) -> Path:
        return self.path / "run.lock"

    @property
    def stop_file(self) -> Path:
        return self.path / "stop_requested"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def encoder(self) -> Path:
        return self.path / "encoder.pt"

    # evaluation
    @property
    def eval(self) -> Path:
        return self.path / "eval"

    def features(self, name: str) -> Path:
        """``eval/features/<name>``: one dataset's arrays through this run's model."""
        return self.eval / "features" / name

    def probe(self, pair: str) -> Path:
        """``eval/probe/<pair>``: the probe and kNN figures of one (train, val) pair."""
        return self.eval / "probe" / pair

    def retrieval(self, array: str, pair: str) -> Path:
        """``eval/retrieval/<array>/<pair>``: the retrieval report of one (database, queries) pair."""
        return self.eval / "retrieval" / array / pair

    def probe_reports(self) -> list[Path]:
        """Every ``probe.json`` the run holds, oldest first."""
        return _by_mtime((self.eval / "probe").glob("*/probe.json"))

    def retrieval_reports(self, array: Optional[str] = None) -> list[Path]:
        """Every ``retrieval.json`` the run holds (of ``array``, or of all), oldest first."""
        return _by_mtime((self.eval / "retrieval").glob(f"{array or '*'}/*/retrieval.json"))

    @property
    def ray_storage(self) -> Path:
        """Where Ray Train keeps its bookkeeping of an extraction job on this run."""
        return self.eval / ".ray"

    # reports
    @property
    def report(self) -> Path:
        return self.path / "report"

    @property
    def demo(self) -> Path:
        return self.path / "demo.json"

    # reading (the files' writers are named in the module docstring)
    def read_status(self) -> Optional[dict]:
        """``status.json`` (how the last start ended), or None while there is none."""
        return _read_json(self.status)

    def read_attempts(self) -> list[dict]:
        """The rows of ``attempts.jsonl`` (none before the first start)."""
        return _read_jsonl(self.attempts)

    def read_metrics(self) -> list[dict]:
        """The rows of ``metrics.jsonl`` (none before the first logged step)."""
        return _read_jsonl(self.metrics)

    def read_demo(self) -> Optional[dict]:
        return _read_json(self.demo)


def _by_mtime(paths) -> list[Path]:
    return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
