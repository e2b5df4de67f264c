"""A run directory read back: its resolved config and its trained model (the inverse of export).

A finished run holds ``config.yaml`` (the resolved config), ``model.pt`` (the whole module:
encoder, projector, L2-BatchNorm statistics, online head) and ``encoder.pt``;
``status.json`` says how it ended and at which step. Evaluation starts from
:func:`load_run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch

from eigenmap.config import Config, load_config
from eigenmap.models import EigenmapModel, build_model

__all__ = ["RunDirError", "LoadedRun", "load_run", "MODEL_FILE", "ENCODER_FILE", "CONFIG_FILE", "STATUS_FILE"]

CONFIG_FILE, MODEL_FILE, ENCODER_FILE, STATUS_FILE = "config.yaml", "model.pt", "encoder.pt", "status.json"


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
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_run(run_dir: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> LoadedRun:
    """The config and trained model of a finished run.

    Args:
        run_dir: a ``train.run_dir`` that ``eigenmap train`` wrote.
        device: where the model goes.

    Returns:
        :class:`LoadedRun`; the model is in eval mode (BatchNorm and L2-BatchNorm use their
        running statistics), weights read with ``torch.load(..., weights_only=True)``.

    Raises:
        RunDirError: no such directory, no ``config.yaml``, or no ``model.pt`` (the run has not
            finished: the message says what its status is and how to get weights).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory '{run_dir}' does not exist (pass the train.run_dir of a run)")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunDirError(f"'{run_dir}' is not a run directory: it has no {CONFIG_FILE} "
                          "(pass the train.run_dir that `eigenmap train` wrote)")
    weights = run_dir / MODEL_FILE
    status = read_status(run_dir)
    if not weights.is_file():
        how = (f"status.json says {status.get('status')!r} at step {status.get('step')}" if status
               else "it has no status.json: still running, or stopped before its end")
        raise RunDirError(f"run '{run_dir}' has no trained weights ({MODEL_FILE} is missing; {how}). "
                          f"Finish the run (`eigenmap train` on the same run directory resumes it) or write "
                          f"weights from a kept checkpoint with `eigenmap export {run_dir}`")
    cfg = load_config(config_path)
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    step = status.get("step") if status else None
    return LoadedRun(cfg, model.to(device).eval(), step, weights)
