"""The one way a training config is loaded, and the checks it must pass before any worker starts.

Every entry point (``eigenmap train``, ``python -m eigenmap.train.worker``, the benchmarks)
goes through :func:`load_train_config` or :func:`prepare_train_config`: YAML + overrides,
paths made absolute (Ray workers run in their own working directories), derived values
resolved (the run's plan from the training set's image count: steps per epoch by the loader's
own sharding rule, :func:`eigenmap.data.sharding.steps_per_epoch`, total and warm-up steps), then
:func:`check_train_config`. A bad run fails in a second with a message naming the key, not
minutes later inside a Ray worker.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Optional, Union

from eigenmap.config import Config, ConfigError, load_config, resolve
from eigenmap.data.beton_check import BetonError, beton_num_samples, beton_problems
from eigenmap.data.manifest import ManifestError, manifest_path, read_manifest
from eigenmap.data.sharding import steps_per_epoch
from eigenmap.data.synthetic import SYNTHETIC
from eigenmap.durable import folder_lock

__all__ = ["check_train_config", "prepare_train_config", "load_train_config"]


def load_train_config(path: Union[str, Path], overrides: typing.Sequence[str] = ()) -> Config:
    """Load ``path`` with ``section.key=value`` overrides and :func:`prepare_train_config` it.

    Raises:
        ConfigError: missing file, bad YAML, bad key or value, or a failed check, named.
    """
    return prepare_train_config(load_config(path, overrides))


def prepare_train_config(cfg: Config, *, check_paths: bool = True) -> Config:
    """``cfg`` with absolute paths and derived values, checked; a new config.

    With ``check_paths`` (the default) the training data is checked and counted, and the
    ``derived`` section holds the run's plan (steps per epoch, total and warm-up steps); without
    it the plan stays null unless the data is the synthetic source.

    Raises:
        ConfigError: a failed check (see :func:`check_train_config`), or a training set too small
            for one step of the global batch.
    """
    cfg = resolve(cfg)
    cfg.train.run_dir = _absolute(cfg.train.run_dir)
    if cfg.data.train_path != SYNTHETIC:
        cfg.data.train_path = _absolute(cfg.data.train_path)
    cfg.data.val_path = _absolute(cfg.data.val_path)
    check_train_config(cfg, check_paths=check_paths)
    images = _train_images(cfg) if check_paths or cfg.data.train_path == SYNTHETIC else None
    if images is None:
        return cfg
    workers, batch = cfg.dist.num_workers, cfg.data.batch_size_per_worker
    steps = steps_per_epoch(images, world_size=workers, batch_size=batch)
    if cfg.data.train_path == SYNTHETIC:
        steps = max(steps, 1)  # the synthetic source cycles its pool: one step at least
    elif steps == 0:
        raise ConfigError(f"config key 'data.batch_size_per_worker' ({batch}): '{cfg.data.train_path}' has {images} "
                          f"images, too few for one step of {workers} workers x {batch}; set "
                          f"data.batch_size_per_worker={max(images // workers, 1)} or lower")
    return resolve(cfg, train_images=images, steps_per_epoch=steps)


def _train_images(cfg: Config) -> Optional[int]:
    """Images in the training set: the synthetic source's count, the manifest's, else the FFCV
    header's (a file FFCV wrote directly)."""
    path = cfg.data.train_path
    if path == SYNTHETIC:
        return cfg.data.synthetic_images
    manifest = _manifest_or_none(path)
    if manifest is not None:
        return int(manifest["num_images"])
    try:
        return beton_num_samples(path)
    except BetonError as e:
        raise ConfigError(f"config key 'data.train_path': {e}") from None


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def check_train_config(cfg: Config, *, check_paths: bool = True) -> None:
    """Raise :class:`ConfigError` naming the problem when ``cfg`` cannot train.

    Checks: combinations the schema cannot express (LARS needs whole parameters, so ZeRO
    stage 0; GPU-only settings), the training data (set, exists, not empty, whole: its size
    and FFCV header match its manifest, see :mod:`eigenmap.data.beton_check`; a manifest whose
    class count fits the online classifier, which needs single-label data) and a run directory
    that is not a file.
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
    if check_paths:
        _check_train_data(cfg)


def _check_train_data(cfg: Config) -> None:
    path = cfg.data.train_path
    if path == SYNTHETIC:
        return
    if not path:
        raise ConfigError(f"config key 'data.train_path' is empty: pass data.train_path=PATH.beton (written by "
                          f"`eigenmap prepare`) or data.train_path={SYNTHETIC}")
    if Path(path).is_dir():
        raise ConfigError(f"config key 'data.train_path': '{path}' is a folder; training reads a .beton: write one "
                          f"from an ImageFolder with `eigenmap prepare {path} OUT.beton` and pass "
                          "data.train_path=OUT.beton")
    if not Path(path).is_file():
        raise ConfigError(f"config key 'data.train_path': '{path}' does not exist (write it with "
                          f"`eigenmap prepare SRC OUT.beton`, or pass data.train_path={SYNTHETIC})")
    with folder_lock(Path(path).parent, shared=True):  # not half-way through a `prepare` publishing it
        try:
            problems = beton_problems(path)
        except ManifestError as e:
            raise ConfigError(str(e)) from None
        manifest = _manifest_or_none(path)
    if problems:
        raise ConfigError("config key 'data.train_path': " + "; ".join(problems))
    if manifest is not None and cfg.model.online_classifier and manifest.get("label_kind") == "multi":
        # the monitor is single-label cross-entropy: multi-hot rows have no one class to score
        raise ConfigError(
            f"config key 'model.online_classifier': '{path}' is multi-label (multi-hot rows of "
            f"{manifest.get('num_labels')} labels, its manifest says), but the online classifier is a single-label "
            "monitor (cross-entropy); set model.online_classifier=false (the objective never reads labels)")
    if manifest is not None and cfg.model.online_classifier and len(manifest["classes"]) > cfg.model.num_classes:
        classes = len(manifest["classes"])
        raise ConfigError(
            f"config key 'model.num_classes' ({cfg.model.num_classes}) is below the {classes} classes of "
            f"'{path}' (its manifest); set model.num_classes={classes}")


def _manifest_or_none(path: str) -> Optional[dict]:
    """The ``.beton``'s manifest, None when there is none (a file written by FFCV directly)."""
    if not manifest_path(path).is_file():
        return None
    try:
        return read_manifest(path)
    except ManifestError as e:
        raise ConfigError(str(e)) from None
