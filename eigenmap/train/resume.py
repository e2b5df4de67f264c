"""The resume rules: which settings may change between two starts of one run directory.

A run resumes from its latest checkpoint whenever it starts on a run directory that has one.
Some settings change what that checkpoint means: the batch and the worker count (the loader
position is counted in steps of the old global batch; ZeRO shards are per worker), the data,
the model and the loss (the weights and statistics belong to them), the seed (the data order
and augmentations), the optimiser and ZeRO stage (the optimiser state's layout), and the plan
the schedules span (``derived.total_steps`` and ``derived.warmup_steps``, from ``train.epochs``,
``train.max_steps`` and ``optim.warmup_epochs``: a resumed run keeps the plan it started with).
A start that changes any of them is refused, naming each changed key with its old and new
value, unless the user passes ``--allow-config-change``; the loader position is then
re-derived from the images already seen in the current epoch (:func:`reposition`), and the
schedules follow the new plan from the checkpoint's step. Every other key (logging,
checkpoints, the lr's peak and floor, augmentation strengths...) may change freely.

The old values come from the checkpoint itself (``meta.json`` records the resolved config and
the identity of the training data), so a start that changed settings and died before its
first checkpoint does not move the reference; checkpoints written before that record fall
back to the run's ``config.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
import yaml

from eigenmap.config import Config, ConfigError, to_dict
from eigenmap.data.manifest import dataset_identity
from eigenmap.run import RunDir
from eigenmap.train.checkpoint import TrainerState
from eigenmap.train.checkpoint_files import ENGINE_TAG, find_latest, read_meta

__all__ = ["Change", "MEANING_KEYS", "meaning_changes", "check_resume", "reposition", "ALLOW_FLAG", "ALLOW_HELP"]

log = logging.getLogger(__name__)

ALLOW_FLAG = "--allow-config-change"
ALLOW_HELP = ("resume although the batch, worker count, data, model, loss, seed, optimiser, ZeRO stage or the "
              "planned length changed since the run's checkpoint (the loader position is re-derived from the images "
              "seen in the epoch; warm-up, cosine and alpha ramp follow the new plan from the checkpoint's step)")
# single keys, and whole sections (a trailing dot)
MEANING_KEYS = ("data.batch_size_per_worker", "dist.num_workers", "data.train_path", "train.seed",
                "optim.name", "dist.zero_stage", "model.", "loss.", "derived.total_steps", "derived.warmup_steps")
DATA_CONTENTS = "data.train_path (file contents)"


class Change(NamedTuple):
    """One changed setting: its dotted key, the checkpoint's value and the new one."""

    key: str
    old: Any
    new: Any


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_meaning(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MEANING_KEYS)


# free-form mappings: a key either config has is a setting, not one added to the schema since
FREE_FORM = ("model.timm_kwargs.",)


def meaning_changes(old: dict, new: dict) -> list[Change]:
    """The meaning keys whose values differ between two configs (plain nested dicts). Keys the
    old config does not have (added to the schema since) are not compared, except inside the
    free-form mappings (``model.timm_kwargs``)."""
    before, after = _flatten(old), _flatten(new)
    keys = sorted(set(before) | {k for k in after if k.startswith(FREE_FORM)})
    return [Change(k, before.get(k), after.get(k)) for k in keys
            if _is_meaning(k) and before.get(k) != after.get(k)]


def _data_change(old: Optional[dict], new: Optional[dict]) -> list[Change]:
    """The training file's contents differ (same path or not): by checksum when both manifests
    have one, else by size and image count."""
    if not old or not new:
        return []
    keys = ("sha256",) if old.get("sha256") and new.get("sha256") else ("bytes", "num_images")
    if all(old.get(k) == new.get(k) for k in keys):
        return []

    def show(d: dict) -> str:
        digest = f"sha256 {d['sha256'][:12]}..., " if d.get("sha256") else ""
        return f"{digest}{d.get('bytes')} bytes, {d.get('num_images')} images"
    return [Change(DATA_CONTENTS, show(old), show(new))]


def _reference_config(run_dir: Path, meta: dict) -> Optional[dict]:
    if isinstance(meta.get("config"), dict):
        return meta["config"]
    saved = RunDir(run_dir).config
    return yaml.safe_load(saved.read_text()) if saved.is_file() else None


def check_resume(cfg: Config, *, allow_config_change: bool = False, report: bool = True) -> list[Change]:
    """Refuse a resume whose settings change the meaning of the run's latest checkpoint.

    Call before any worker starts (``eigenmap train``, ``python -m eigenmap.train.worker``).

    Returns:
        The changed meaning keys (empty for a new run or an unchanged one); with
        ``allow_config_change`` they are logged as a warning (``report``: by one process of
        a job, not by each).

    Raises:
        ConfigError: a changed meaning key without ``allow_config_change`` (the message lists
            each with its old and new value); or, even with it, a checkpoint that cannot load
            into the new config (other weight shapes, ZeRO shards of another worker count).
    """
    run_dir = Path(cfg.train.run_dir)
    latest = find_latest(RunDir(run_dir).checkpoints, warn=False)
    if latest is None:
        return []
    meta = read_meta(latest)
    old = _reference_config(run_dir, meta)
    if old is None:
        return []
    changes = meaning_changes(old, to_dict(cfg)) + _data_change(meta.get("data"), dataset_identity(cfg.data.train_path))
    if not changes:
        return []
    listing = "\n".join(f"  {c.key}: {c.old!r} -> {c.new!r}" for c in changes)
    if any(c.key.startswith("derived.") for c in changes):
        listing += ("\n(derived.total_steps and derived.warmup_steps are the plan the lr warm-up and cosine and "
                    f"NeuralEF's alpha ramp span; with {ALLOW_FLAG} they follow the new plan from step "
                    f"{meta.get('step', 'of the checkpoint')}, where the lr moves to the new schedule's value)")
    if not allow_config_change:
        raise ConfigError(
            f"run directory '{run_dir}' resumes from {latest.name}, and these settings change what that checkpoint "
            f"means:\n{listing}\nResume with the run's own values, start a new run (another train.run_dir), or pass "
            f"{ALLOW_FLAG} to resume anyway (the loader position is re-derived from the images seen in the current "
            "epoch)")
    if report:
        log.warning("%s: resuming %s with changed settings:\n%s", ALLOW_FLAG, latest, listing)
    _check_loadable(cfg, latest, old, changes)
    return changes


def _check_loadable(cfg: Config, latest: Path, old: dict, changes: list[Change]) -> None:
    """Even when allowed, a change the checkpoint cannot follow is refused here, before any
    worker starts, rather than failing in every worker restart."""
    keys = {c.key for c in changes}
    old_stage = _flatten(old).get("dist.zero_stage", 0)
    if "dist.num_workers" in keys and old_stage:
        raise ConfigError(
            f"checkpoint {latest} was written with ZeRO stage {old_stage}: its optimiser state is split by "
            f"worker count, so dist.num_workers cannot change even with {ALLOW_FLAG}; resume with "
            f"dist.num_workers={_flatten(old)['dist.num_workers']}")
    if any(k.startswith(("model.", "loss.")) for k in keys):
        from eigenmap.models import build_model

        # the engine file is one this project's run wrote; weights_only=True reads it (DeepSpeed
        # stores only tensors, numbers, strings and its config dict there)
        state = torch.load(latest / ENGINE_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
        try:
            build_model(cfg).load_state_dict(state["module"], strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ConfigError(
                f"checkpoint {latest} cannot be loaded into the changed model, even with {ALLOW_FLAG}: "
                f"{' '.join(first[:3])[:600]}; resume with the run's model and loss settings, or start a new "
                "run") from None


def reposition(state: TrainerState, *, old_global_batch: int, new_global_batch: int,
               steps_per_epoch: int) -> TrainerState:
    """The loader position after an allowed change of the global batch (or of the data).

    The images the current epoch has already seen (``step_in_epoch * old_global_batch``) are
    counted in steps of the new batch, rounded down (a few images are seen twice rather than
    skipped); a position at or past the new epoch's end starts the next epoch. ``step`` (the
    optimiser steps taken, which the lr schedule follows) is unchanged.
    """
    in_epoch = state.step_in_epoch * old_global_batch // new_global_batch
    if in_epoch >= steps_per_epoch:
        return TrainerState(step=state.step, epoch=state.epoch + 1, step_in_epoch=0)
    return TrainerState(step=state.step, epoch=state.epoch, step_in_epoch=in_epoch)
