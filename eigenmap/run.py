"""The run directory: every file and folder of it named in one place (:class:`RunDir`), the
trained model read back (:func:`load_run`) and written (:func:`export_weights`,
:func:`export_checkpoint`).

A run directory is ``train.run_dir``; ``docs/run-directory.md`` says what each of its files
holds, who writes it and who reads it. A finished run holds ``model.pt`` (the whole module:
encoder, projector, L2-BatchNorm statistics, online head) and ``encoder.pt``; ``status.json``
says how it ended and at which step. Evaluation starts from :func:`load_run`. A run that has not
finished (preempted, stopped, still running) has weights in its kept checkpoints:
:func:`export_checkpoint` (``eigenmap export RUN [--step N]``) writes ``model.pt`` and
``encoder.pt`` from one, and ``load_run(run, step=N)`` loads one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch

from eigenmap.config import Config, from_dict, load_config, to_dict
from eigenmap.durable import publish
from eigenmap.models import EigenmapModel, build_model
from eigenmap.train.checkpoint_files import ENGINE_TAG, checkpoint_step, find_latest, read_meta, verify_checkpoint

__all__ = ["RunDir", "pair_name", "RunDirError", "LoadedRun", "load_run", "export_weights", "export_checkpoint"]


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

    # reading (each file's writer: docs/run-directory.md)
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


# ------------------------------------------------------------------------------------------
# The trained model, read back and written
# ------------------------------------------------------------------------------------------


class RunDirError(ValueError):
    """The run directory is missing, incomplete, or not one this project wrote."""


class LoadedRun(NamedTuple):
    """A trained run: ``config`` (resolved), ``model`` (eval mode, its running statistics
    loaded), ``step`` (optimiser steps behind the weights, None when unknown) and
    ``weights`` (the file they came from)."""

    config: Config
    model: EigenmapModel
    step: Optional[int]
    weights: Path


def load_run(run_dir: Union[str, Path], *, device: Union[str, torch.device] = "cpu",
             step: Optional[int] = None) -> LoadedRun:
    """The config and trained model of a finished run (or of one of its kept checkpoints).

    Args:
        run_dir: a ``train.run_dir`` that ``eigenmap train`` wrote.
        device: where the model goes.
        step: load the kept checkpoint of this step instead of the final weights.

    Returns:
        :class:`LoadedRun`; the model is in eval mode (BatchNorm and L2-BatchNorm use their
        running statistics), weights read with ``torch.load(..., weights_only=True)``.

    Raises:
        RunDirError: no such directory, no ``config.yaml``, or no ``model.pt`` (the run has not
            finished: the message says what its status is and how to get weights).
    """
    run_dir = _run_dir(run_dir)
    if step is not None:
        ckpt = _find_checkpoint(run_dir, step)
        cfg, model = _checkpoint_model(run_dir, ckpt)
        return LoadedRun(cfg, model.to(device).eval(), step, ckpt)
    weights = RunDir(run_dir).model
    status = RunDir(run_dir).read_status()
    if not weights.is_file():
        how = (f"status.json says {status.get('status')!r} at step {status.get('step')}" if status
               else "it has no status.json: still running, or stopped before its end")
        raise RunDirError(f"run '{run_dir}' has no trained weights ({weights.name} is missing; {how}). "
                          f"Finish the run (`eigenmap train` on the same run directory resumes it) or write "
                          f"weights from a kept checkpoint with `eigenmap export {run_dir}`")
    cfg = load_config(RunDir(run_dir).config)
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    step = status.get("step") if status else None
    return LoadedRun(cfg, model.to(device).eval(), step, weights)


def _run_dir(run_dir: Union[str, Path]) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory '{run_dir}' does not exist (pass the train.run_dir of a run)")
    if not RunDir(run_dir).config.is_file():
        raise RunDirError(f"'{run_dir}' is not a run directory: it has no {RunDir(run_dir).config.name} "
                          "(pass the train.run_dir that `eigenmap train` wrote)")
    return run_dir


def _find_checkpoint(run_dir: Path, step: Optional[int]) -> Path:
    """The kept checkpoint of ``step`` (default: the newest good one), verified with checksums."""
    root = RunDir(run_dir).checkpoints
    kept = sorted(n for p in root.glob("step_*") if (n := checkpoint_step(p)) is not None) if root.is_dir() else []
    if step is None:
        found = find_latest(root, checksums=True)
        if found is None:
            raise RunDirError(f"run '{run_dir}' has no usable checkpoint (kept steps: {kept or 'none'})")
        return found
    path = root / f"step_{step:08d}"
    if step not in kept:
        raise RunDirError(f"run '{run_dir}' keeps no checkpoint of step {step}; kept steps: {kept or 'none'}")
    problem = verify_checkpoint(path, checksums=True)
    if problem is not None:
        raise RunDirError(f"checkpoint {path} is unusable ({problem}); kept steps: {kept}")
    return path


def _checkpoint_model(run_dir: Path, ckpt: Path) -> tuple[Config, EigenmapModel]:
    """The config and model (train mode, on CPU) of the checkpoint ``ckpt`` of ``run_dir``."""
    meta = read_meta(ckpt)
    # the run's config with the model and loss the checkpoint was written under (a later start
    # may have changed them with --allow-config-change)
    cfg = load_config(RunDir(run_dir).config)
    saved = meta.get("config")
    if isinstance(saved, dict):
        cfg = from_dict({**to_dict(cfg), "model": saved["model"], "loss": saved["loss"]})
    # DeepSpeed's model-states file holds tensors, numbers, strings and its config dict: it loads
    # with weights_only=True. Its "module" is the whole state dict for ZeRO 0, 1 and 2 (only the
    # optimiser state is sharded there, in the zero_pp_rank_* files).
    engine_state = torch.load(ckpt / ENGINE_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
    model = build_model(cfg)
    model.load_state_dict(engine_state["module"])
    return cfg, model


def export_weights(model: torch.nn.Module, run_dir: Path) -> dict[str, Path]:
    """Rank 0: write ``encoder.pt`` (a plain torchvision ResNet state dict, no ``fc``; load it
    with ``resnet.load_state_dict(sd, strict=False)``) and ``model.pt`` (the whole module:
    encoder, projector, L2-BatchNorm statistics, online head). Atomic and durable (temp file,
    fsync, rename)."""
    run = RunDir(run_dir)
    out = {}
    for path, module in ((run.encoder, model.backbone), (run.model, model)):
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(sd, tmp)
        publish(tmp, path)
        out[path.name] = path
    return out


def export_checkpoint(run_dir: Union[str, Path], *, step: Optional[int] = None, out: Optional[Union[str, Path]] = None,
                      overwrite: bool = False) -> dict[str, Path]:
    """Write ``model.pt`` and ``encoder.pt`` (the format of a finished run's) from a kept
    checkpoint of ``run_dir``.

    Args:
        step: the checkpoint's step; default the newest good one.
        out: the folder to write into (created); default ``run_dir``, where :func:`load_run`
            then finds them.
        overwrite: replace weights already in ``out`` (e.g. a finished run's own).

    Returns:
        ``{"model.pt": path, "encoder.pt": path, "step": step}``.

    Raises:
        RunDirError: not a run directory, no such or no usable checkpoint, or weights already
            in ``out`` without ``overwrite``.
    """
    run_dir = _run_dir(run_dir)
    ckpt = _find_checkpoint(run_dir, step)
    out = Path(out) if out is not None else run_dir
    if RunDir(out).model.exists() and not overwrite:
        status = RunDir(run_dir).read_status() if out == run_dir else None
        what = f" (the run's own: status {status.get('status')!r} at step {status.get('step')})" if status else ""
        raise RunDirError(f"'{RunDir(out).model}' exists{what}; write elsewhere or overwrite it "
                          "(`eigenmap export`: --out DIR or --overwrite)")
    _, model = _checkpoint_model(run_dir, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    return {**export_weights(model, out), "step": checkpoint_step(ckpt)}
