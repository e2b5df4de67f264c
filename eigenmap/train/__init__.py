"""Training: the worker loop and its parts (engine, optimiser, schedule, checkpoints, logging).

``from eigenmap.train import train`` runs one worker of a run; see :mod:`eigenmap.train.worker`.
Submodules are imported lazily so that ``eigenmap.train.checks`` (used by the launcher before
any worker starts) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train", "check_train_config"]


def __getattr__(name: str) -> Any:
    if name == "train":
        return importlib.import_module("eigenmap.train.worker").train
    if name == "check_train_config":
        return importlib.import_module("eigenmap.train.checks").check_train_config
    raise AttributeError(f"module 'eigenmap.train' has no attribute {name!r}")
