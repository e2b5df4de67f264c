"""Checkpoints: what one holds, atomic writes, finding the latest (the exported weights,
``model.pt`` and ``encoder.pt``, are :mod:`eigenmap.run`'s).

A checkpoint is a directory ``step_XXXXXXXX`` holding

- ``engine/``: the DeepSpeed engine (module state with the BatchNorm and L2-BatchNorm buffers,
  optimiser state or this rank's ZeRO shard), written by DeepSpeed's own ``save_checkpoint``;
- ``trainer_state.pt``: loader position (epoch, step in epoch), global step and world size
  (rank 0);
- ``rng_rank{r}.pt``: each rank's RNG states (torch, CUDA, numpy, python, batched augments);
- ``meta.json``: the same counters, the last logged metrics, the resolved config and the
  identity of the training data, for people, tools and the resume rules
  (:mod:`eigenmap.train.resume`);
- ``files*.json``: every other file's size and SHA-256, written once all ranks have written
  their part and before the checkpoint is published; which checkpoint is whole and which one a
  run resumes from is :mod:`eigenmap.train.checkpoint_files`.

Where checkpoints go is a :class:`CheckpointStore`: :class:`LocalCheckpointStore` (plain
process or torchrun; temp directory + rename, keeps the last K) or one the launcher passes in
(Ray Train's checkpoint API, see ``launch/ray_runner.py``). The worker never imports Ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from eigenmap import dist
from eigenmap.durable import fsync_dir, publish
# re-exported: where a run resumes from is part of what a checkpoint is
from eigenmap.train.checkpoint_files import (CHECKPOINT_RE, ENGINE_TAG, checkpoint_step, find_latest, is_complete,
                                             newest_good, read_meta, seal_checkpoint, verify_checkpoint)

__all__ = ["TrainerState", "CheckpointStore", "LocalCheckpointStore", "write_checkpoint", "read_checkpoint",
           "read_meta", "seal_checkpoint", "verify_checkpoint", "find_latest", "newest_good", "is_complete",
           "checkpoint_step", "CHECKPOINT_RE", "ENGINE_TAG"]

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """The run's own counters: ``step`` optimiser steps done; the loader resumes at
    (``epoch``, ``step_in_epoch``)."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


# ------------------------------------------------------------------------------------------
# What a checkpoint holds
# ------------------------------------------------------------------------------------------


def _rng_state(augment: Any) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    if augment is not None and hasattr(augment, "state_dict"):
        state["augment"] = augment.state_dict()
    return state


def _set_rng_state(state: dict, augment: Any) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if augment is not None and "augment" in state and hasattr(augment, "load_state_dict"):
        augment.load_state_dict(state["augment"])


def write_checkpoint(path: Path, engine: Any, state: TrainerState, augment: Any = None,
                     metrics: Optional[dict] = None, run_info: Optional[dict] = None) -> None:
    """Every rank writes its part of one checkpoint into the directory ``path``.

    ``run_info`` (rank 0; e.g. ``{"config": ..., "data": ...}``) goes into ``meta.json``: what
    the resume rules compare a new start with. Collective: all ranks must call it (DeepSpeed's
    save synchronises them). The store seals and publishes the directory afterwards.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rank, world = dist.get_rank(), dist.get_world_size()
    engine.save_checkpoint(str(path), tag=ENGINE_TAG, save_latest=False,
                           client_state={"trainer_step": state.step})
    torch.save(_rng_state(augment), path / f"rng_rank{rank}.pt")
    if rank == 0:
        torch.save({**asdict(state), "world_size": world}, path / "trainer_state.pt")
        meta = {**asdict(state), "world_size": world, "time": time.time(), "metrics": metrics or {},
                **(run_info or {})}
        (path / "meta.json").write_text(json.dumps(meta, indent=1))


def read_checkpoint(path: Path, engine: Any, augment: Any = None, *, allow_world_change: bool = False) -> TrainerState:
    """Restore the engine, this rank's RNG states and the counters from ``path`` (all ranks).

    ``allow_world_change`` (``--allow-config-change``): a checkpoint of another worker count is
    loaded when its engine state is whole (ZeRO 0); ranks without an RNG file of their own keep
    their freshly seeded states.
    """
    path = Path(path)
    rank, world = dist.get_rank(), dist.get_world_size()
    trainer = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    saved_world = trainer["world_size"]
    if saved_world != world:
        _check_world_change(path, saved_world, world, engine, allow_world_change)
    # DeepSpeed reads its own files (with torch.load(weights_only=False)); they are files this
    # run wrote and whose checksums were verified before resuming. Everything else here is read
    # with weights_only=True.
    load_path, _ = engine.load_checkpoint(str(path), tag=ENGINE_TAG, load_module_strict=True,
                                          load_optimizer_states=True, load_lr_scheduler_states=False)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no engine state under {path / ENGINE_TAG}")
    rng = path / f"rng_rank{rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, map_location="cpu", weights_only=True), augment)
    else:  # only after an allowed worker-count change (checked above)
        log.warning("checkpoint %s has no RNG state of rank %d (it was written by %d workers): this rank keeps "
                    "its freshly seeded RNG states", path, rank, saved_world)
    return TrainerState(step=trainer["step"], epoch=trainer["epoch"], step_in_epoch=trainer["step_in_epoch"])


def _check_world_change(path: Path, saved: int, world: int, engine: Any, allowed: bool) -> None:
    if not allowed:
        raise RuntimeError(
            f"checkpoint {path} was written by {saved} workers, this run has {world}: resume with the same "
            "dist.num_workers (the loader position and ZeRO shards depend on it), or pass --allow-config-change")
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
    if stage > 0:
        raise RuntimeError(
            f"checkpoint {path} was written by {saved} workers with ZeRO stage {stage}: its optimiser state is split "
            f"in {saved} shards that {world} workers cannot load, even with --allow-config-change; resume with "
            f"dist.num_workers={saved}")


# ------------------------------------------------------------------------------------------
# Where checkpoints go
# ------------------------------------------------------------------------------------------


class CheckpointStore:
    """Where a run's checkpoints go and where a restarted run finds the latest one.

    ``save(step, write, metrics)`` is called by every rank: ``write(dir)`` writes this rank's
    part into a directory the store chooses; the store seals it (file list with checksums) and
    publishes it atomically. ``latest()`` is a context manager yielding the directory to resume
    from, verified with checksums and the same on every rank (collective), or None.
    """

    def latest(self) -> contextlib.AbstractContextManager[Optional[Path]]:
        raise NotImplementedError

    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> None:
        raise NotImplementedError


class LocalCheckpointStore(CheckpointStore):
    """Checkpoints under ``root`` (``run_dir/checkpoints``) on a filesystem every rank sees.

    Every rank writes into ``root/.tmp-step_XXXXXXXX``; after a barrier rank 0 lists the files
    with their checksums, flushes everything to disk and renames the directory to
    ``step_XXXXXXXX`` (a directory rename is atomic), so an interrupted write leaves only a
    temp directory and the previous checkpoint stays the latest. Then the oldest beyond
    ``keep`` are deleted.
    """

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = Path(root), keep

    @contextlib.contextmanager
    def latest(self) -> Iterator[Optional[Path]]:
        yield newest_good(None, self.root)

    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> None:
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp-step_{step:08d}"
        if dist.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted write
            tmp.mkdir(parents=True)
        dist.barrier()
        write(tmp)
        dist.barrier()
        if dist.get_rank() == 0:
            seal_checkpoint(tmp)
            self._publish(tmp, final)
            self._prune()
        dist.barrier()

    def _publish(self, tmp: Path, final: Path) -> None:
        # the same step written by an earlier attempt: moved aside, not deleted, until the new
        # one is in place, so a crash in between never leaves the run without this step's state
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        if final.exists():
            final.rename(old)
        publish(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def _prune(self) -> None:
        done = sorted((step, p) for p in self.root.iterdir()
                      if (step := checkpoint_step(p)) is not None and p.is_dir())
        for _, p in done[: max(len(done) - self.keep, 0)]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".old-step_*"):  # set aside by a save that died before removing it
            shutil.rmtree(p, ignore_errors=True)
        fsync_dir(self.root)
