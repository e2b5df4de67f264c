"""Checks a training config must pass before any worker starts (no torch import here).

``eigenmap train`` runs them in the launcher, so a bad run fails in a second with a message
naming the key, not minutes later inside a Ray worker.
"""

from __future__ import annotations

import json
from pathlib import Path

from eigenmap.config import Config, ConfigError

__all__ = ["check_train_config", "SYNTHETIC"]

SYNTHETIC = "synthetic"


def check_train_config(cfg: Config, *, check_paths: bool = True) -> None:
    """Raise :class:`ConfigError` naming the problem when ``cfg`` cannot train.

    Checks: combinations the schema cannot express (LARS needs whole parameters, so ZeRO
    stage 0), the training data path (set, exists, a manifest whose class count fits the
    online classifier) and a run directory that is not a file.
    """
    if cfg.optim.name == "lars" and cfg.dist.zero_stage > 0:
        raise ConfigError(
            f"config keys 'optim.name' (lars) and 'dist.zero_stage' ({cfg.dist.zero_stage}): LARS scales each "
            "layer by its own weight and update norms, but ZeRO stages 1-2 hand the optimiser flat shards "
            "of many layers; use dist.zero_stage=0 with lars, or optim.name=sgd/adamw with ZeRO")
    if cfg.dist.gpus_per_worker == 0 and cfg.dist.precision in ("bf16", "fp16"):
        raise ConfigError(
            f"config key 'dist.precision': {cfg.dist.precision!r} needs a GPU (dist.gpus_per_worker > 0); "
            "accepted on CPU: 'auto' or 'fp32'")
    if cfg.dist.compile and cfg.dist.gpus_per_worker == 0:
        raise ConfigError("config key 'dist.compile': torch.compile is only used on GPUs; set dist.compile=false on CPU")
    run_dir = Path(cfg.train.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"config key 'train.run_dir': '{run_dir}' exists and is not a directory")
    if not check_paths:
        return
    path = cfg.data.train_path
    if path == SYNTHETIC:
        return
    if not path:
        raise ConfigError("config key 'data.train_path' is empty: pass data.train_path=PATH.beton (written by "
                          "`eigenmap prepare`) or data.train_path=synthetic")
    if not Path(path).is_file():
        raise ConfigError(f"config key 'data.train_path': '{path}' does not exist (write it with "
                          "`eigenmap prepare SRC OUT.beton`, or pass data.train_path=synthetic)")
    manifest = Path(path + ".json")
    if manifest.is_file() and cfg.model.online_classifier:
        try:
            classes = len(json.loads(manifest.read_text())["classes"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"manifest '{manifest}' is unreadable ({e}); rewrite it with `eigenmap prepare`") from None
        if classes > cfg.model.num_classes:
            raise ConfigError(
                f"config key 'model.num_classes' ({cfg.model.num_classes}) is below the {classes} classes of "
                f"'{path}' (its manifest); set model.num_classes={classes}")
