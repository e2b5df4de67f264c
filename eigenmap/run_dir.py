"""A run directory read back: its resolved config and its trained model (the inverse of export).

A finished run holds ``config.yaml`` (the resolved config), ``model.pt`` (the whole module:
encoder, projector, L2-BatchNorm statistics, online head) and ``encoder.pt``;
``status.json`` says how it ended and at which step. Evaluation starts from
:func:`load_run`. A run that has not finished (preempted, stopped, still running) has
weights in its kept checkpoints: :func:`export_checkpoint` (``eigenmap export RUN [--step N]``)
writes ``model.pt`` and ``encoder.pt`` from one, and ``load_run(run, step=N)`` loads one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch

from eigenmap.config import Config, from_dict, load_config, to_dict
from eigenmap.models import EigenmapModel, build_model
from eigenmap.run_layout import RunDir
from eigenmap.train.checkpoint import export_weights
from eigenmap.train.checkpoint_files import ENGINE_TAG, checkpoint_step, find_latest, read_meta, verify_checkpoint

__all__ = ["RunDirError", "LoadedRun", "load_run", "read_status", "export_checkpoint"]


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


def read_status(run_dir: Union[str, Path]) -> Optional[dict]:
    """``status.json`` of a run (how it ended), or None while it has none."""
    return RunDir(run_dir).read_status()


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
    status = read_status(run_dir)
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
        status = read_status(run_dir) if out == run_dir else None
        what = f" (the run's own: status {status.get('status')!r} at step {status.get('step')})" if status else ""
        raise RunDirError(f"'{RunDir(out).model}' exists{what}; write elsewhere or overwrite it "
                          "(`eigenmap export`: --out DIR or --overwrite)")
    _, model = _checkpoint_model(run_dir, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    return {**export_weights(model, out), "step": checkpoint_step(ckpt)}
