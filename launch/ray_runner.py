"""Run the training worker on a Ray cluster with Ray Train's ``TorchTrainer``.

- Cluster and workers: ``dist.address`` (None: an embedded local cluster), ``dist.num_workers``
  processes reserving ``dist.cpus_per_worker`` CPUs and ``dist.gpus_per_worker`` GPUs each
  (``launch/ray_cluster.py``, shared with feature extraction).
- Checkpoints go through Ray Train's checkpoint API into ``run_dir/checkpoints/step_XXXXXXXX``
  (``RunConfig(storage_path=run_dir, name="checkpoints")``): Ray registers a checkpoint only
  once every worker's files are persisted, keeps the last ``train.keep_checkpoints``, and on a
  worker failure restarts the group (``FailureConfig(max_failures)``) from the latest one. A
  new ``eigenmap train`` on the same run directory finds Ray's snapshot there and resumes.
  Each worker lists its files with their checksums (``files_rank{r}.json``); a restart checks
  Ray's latest checkpoint against them and falls back to the newest good ``step_*`` directory
  when a file is damaged, instead of failing on it at every restart.
- A SIGTERM or a Ctrl-C to the driver (this process) writes the run's stop file: every worker
  saves a checkpoint at its next log or checkpoint step and the run ends with status
  "preempted" or "interrupted". A second Ctrl-C aborts at once: the embedded cluster is shut
  down (its workers with it), and the last checkpoint saved stays the latest.

``run_dir`` must be a path every node sees (a shared filesystem) on a multi-node cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from eigenmap.config import Config, from_dict, to_dict
from eigenmap.run import RunDir
from eigenmap.train.preempt import INTERRUPTED, stop_on_signals
from eigenmap.train.run_start import ABORTED
from launch.ray_cluster import RayWorkers, build_trainer, quiet_ray_train_logs, ray_cluster

__all__ = ["run_on_ray", "RayCheckpointStore", "train_loop_per_worker", "CHECKPOINTS_DIR_NAME"]

log = logging.getLogger(__name__)

CHECKPOINTS_DIR_NAME = RunDir("").checkpoints.name  # Ray Train's run name: its folder in the run directory


class RayCheckpointStore:
    """The worker's checkpoint store under Ray Train (see ``eigenmap.train.checkpoint``).

    ``save``: every worker writes its part into a local temporary directory, lists its files
    with their checksums there, and reports it with ``ray.train.report(checkpoint=...)``; Ray
    merges the workers' files into one directory, which each worker then flushes to disk.
    ``latest``: Ray's checkpoint to restart from, verified, else (or when it is damaged) the
    newest good ``step_*`` directory already there.
    """

    def __init__(self, run_dir: Path):
        self.root = RunDir(run_dir).checkpoints

    @contextlib.contextmanager
    def latest(self) -> Iterator[Optional[Path]]:
        import ray.train

        from eigenmap.train.checkpoint_files import newest_good

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield newest_good(None, self.root)
            return
        with checkpoint.as_directory() as path:
            yield newest_good(Path(path), self.root)

    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> None:
        import ray.train

        from eigenmap.durable import fsync_dir, fsync_file
        from eigenmap.train.checkpoint_files import seal_checkpoint

        name, rank = f"step_{step:08d}", ray.train.get_context().get_world_rank()
        with tempfile.TemporaryDirectory(prefix=f"eigenmap-step{step}-") as tmp:
            write(Path(tmp))
            seal_checkpoint(Path(tmp), f"files_rank{rank}.json")
            mine = [p.relative_to(tmp) for p in Path(tmp).rglob("*") if p.is_file()]
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=name)
        published = self.root / name
        if published.is_dir():  # Ray copies without fsync: flush this worker's files of the copy
            for rel in mine:
                fsync_file(published / rel)
            for folder in {published / rel.parent for rel in mine}:
                fsync_dir(folder)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point on each worker: rebuild the config and run the worker loop."""
    from eigenmap.train.worker import train

    import ray
    import ray.train

    quiet_ray_train_logs()

    cfg = from_dict(config["cfg"])
    rank = ray.train.get_context().get_world_rank()
    run = RunDir(cfg.train.run_dir)
    run.workers.mkdir(parents=True, exist_ok=True)
    run.worker_file(rank, "ray").write_text(json.dumps(  # which Ray node runs each rank
        {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}))
    train(cfg, store=RayCheckpointStore(Path(cfg.train.run_dir)),
          allow_config_change=config.get("allow_config_change", False), launch_id=config.get("launch_id"))


def run_on_ray(cfg: Config, *, allow_config_change: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (resolved and checked) with a Ray ``TorchTrainer``; returns the summary.

    The caller holds the run directory's lock and has applied the resume rules
    (``launch/cmd_train.py``); ``allow_config_change`` is passed on to the workers.

    The summary is the worker's ``run_dir/status.json`` (``status`` "finished", "nonfinite",
    "preempted" or "interrupted") plus ``attempts`` (worker-group starts, restarts included),
    ``wall_seconds``; when Ray gave up, ``status: "failed"`` with the error; after a second
    Ctrl-C, ``status: "interrupted"`` without a step (the workers were stopped at once).
    """
    run = RunDir(cfg.train.run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    attempts_before = len(run.read_attempts())
    started, launch_id = time.perf_counter(), uuid.uuid4().hex
    workers = RayWorkers(cfg.dist.num_workers, cfg.dist.cpus_per_worker, cfg.dist.gpus_per_worker, cfg.dist.address)
    aborted = False
    with ray_cluster(workers):
        # installed after ray.init, which sets its own SIGTERM handler in the driver (sys.exit)
        with stop_on_signals(run.path, announce=True):
            try:
                error = _fit(_trainer(cfg, workers, allow_config_change, launch_id))
            except KeyboardInterrupt:  # the second Ctrl-C: an embedded cluster is shut down on leaving
                aborted = True  # ray_cluster; on a cluster joined, the job's actors end with this driver
    # the workers write status.json; one left by an earlier start must not pass for this one's
    summary: dict[str, Any] = run.read_status() or {}
    if summary.get("launch_id") != launch_id:
        summary = {}
    if aborted:
        summary = {"status": INTERRUPTED, "message": ABORTED}
    elif error is not None or not summary:
        summary = {**summary, "status": "failed",
                   "message": error or "the workers stopped without writing status.json"}
    summary["attempts"] = len(run.read_attempts()) - attempts_before
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def _trainer(cfg: Config, workers: RayWorkers, allow_config_change: bool, launch_id: str):
    """The ``TorchTrainer`` of the run: its workers, storage and restarts."""
    from ray.train import CheckpointConfig, FailureConfig

    return build_trainer(train_loop_per_worker, {"cfg": to_dict(cfg), "allow_config_change": allow_config_change,
                                                    "launch_id": launch_id},
                         workers, storage_path=str(cfg.train.run_dir), name=CHECKPOINTS_DIR_NAME,
                         failure_config=FailureConfig(max_failures=cfg.dist.max_failures),
                         checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints))


def _fit(trainer) -> Optional[str]:
    """Run the trainer; the error that ended it, or None."""
    try:
        result = trainer.fit()
    except Exception as e:  # Ray raises when the run failed more than max_failures times
        return f"{type(e).__name__}: {e}"
    return repr(result.error) if getattr(result, "error", None) is not None else None
