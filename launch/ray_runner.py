"""Run the training worker on a Ray cluster with Ray Train's ``TorchTrainer``.

- Cluster: an embedded local one (loopback only, dashboard off) when ``dist.address`` is null,
  else the existing cluster at ``auto`` or ``host:port`` (how a run scales out to many nodes).
  On the embedded cluster the training process group listens on 127.0.0.1 too
  (``launch/ray_loopback.py``): nothing of the run is reachable from another machine.
- Workers: ``dist.num_workers`` processes, each reserving ``dist.cpus_per_worker`` CPUs and
  ``dist.gpus_per_worker`` GPUs; the process group is NCCL on GPUs and gloo on CPUs.
- Checkpoints go through Ray Train's checkpoint API into ``run_dir/checkpoints/step_XXXXXXXX``
  (``RunConfig(storage_path=run_dir, name="checkpoints")``): Ray registers a checkpoint only
  once every worker's files are persisted, keeps the last ``train.keep_checkpoints``, and on a
  worker failure restarts the group (``FailureConfig(max_failures)``) from the latest one. A
  new ``eigenmap train`` on the same run directory finds Ray's snapshot there and resumes.
  Each worker lists its files with their checksums (``files_rank{r}.json``); a restart checks
  Ray's latest checkpoint against them and falls back to the newest good ``step_*`` directory
  when a file is damaged, instead of failing on it at every restart.
- A SIGTERM to the driver (this process) writes the run's stop file: every worker saves a
  checkpoint at its next log or checkpoint step and the run ends with status "preempted".

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
from eigenmap.run_layout import RunDir
from eigenmap.train.preempt import forward_sigterm_to_run

__all__ = ["run_on_ray", "init_ray", "embedded_trainer_class", "quiet_ray_train_logs", "RayCheckpointStore",
           "train_loop_per_worker", "CHECKPOINTS_DIR_NAME"]

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


def quiet_ray_train_logs() -> None:
    """Ray Train logs every reported checkpoint from every rank at INFO ("Checkpoint successfully
    created", "Reporting training result ... metrics={...}"); the run's own progress lines and
    log say the same once. Warnings stay."""
    from ray.train.v2._internal.execution import context

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # that module names its logger by path


def init_ray(cfg: Config) -> bool:
    """Connect to ``dist.address`` or start an embedded local cluster; True when we started it."""
    address = cfg.dist.address
    embedded = address is None
    if embedded:
        # single-machine mode: Ray advertises and binds its ports on 127.0.0.1 only (read when
        # ray is first imported, hence before the import below; it also refuses other nodes)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # the training workers run at the driver's priority, not Ray's default nice 15 for
        # workers (on a shared machine a niced trainer loses its cores to any other job)
        os.environ.setdefault("RAY_worker_niceness", "0")
        # every Ray process records metrics for a dashboard that is off here (CPU taken from the
        # workers for nothing); a single machine is never drained by a cloud provider, so no
        # preemption-watcher actor polling every 5 s either
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # keep the workers' own output format
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")  # Ray's Prometheus metrics: TensorBoard has ours
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to the network
    import ray

    if ray.is_initialized():
        return False
    if embedded:
        need_cpus = cfg.dist.num_workers * cfg.dist.cpus_per_worker
        ray.init(address="local", num_cpus=max(need_cpus, os.cpu_count() or 1), include_dashboard=False,
                 configure_logging=True, logging_level=logging.WARNING)
        return True
    ray.init(address=address, logging_level=logging.WARNING)
    return False


def embedded_trainer_class():
    """``TorchTrainer`` without Ray Train's placement-group cleaner, for the embedded cluster.

    The cleaner is a detached actor that removes the run's placement group if the controller
    dies; it polls the controller's state through the State API every second, which needs the
    dashboard (off here), so it logged "Failed to query Ray Train Controller actor state" once a
    second for the whole run. On an embedded cluster the placement group dies with the cluster
    when the run ends, so the cleaner has nothing to do.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class EmbeddedTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, PlacementGroupCleanerCallback)]

    return EmbeddedTorchTrainer


def run_on_ray(cfg: Config, *, allow_config_change: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (resolved and checked) with a Ray ``TorchTrainer``; returns the summary.

    The caller holds the run directory's lock and has applied the resume rules
    (``launch/cmd_train.py``); ``allow_config_change`` is passed on to the workers.

    The summary is the worker's ``run_dir/status.json`` (``status`` "finished", "nonfinite" or
    "preempted") plus ``attempts`` (worker-group starts, restarts included), ``wall_seconds``
    and, when Ray gave up, ``status: "failed"`` with the error.
    """
    run = RunDir(cfg.train.run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    attempts_before = len(run.read_attempts())
    started, launch_id = time.perf_counter(), uuid.uuid4().hex
    we_started = init_ray(cfg)
    try:
        # installed after ray.init, which sets its own SIGTERM handler in the driver (sys.exit)
        with forward_sigterm_to_run(run.path):
            error = _fit(_trainer(cfg, allow_config_change, launch_id))
    finally:
        if we_started:
            import ray

            ray.shutdown()
    # the workers write status.json; one left by an earlier start must not pass for this one's
    summary: dict[str, Any] = run.read_status() or {}
    if summary.get("launch_id") != launch_id:
        summary = {}
    if error is not None or not summary:
        summary = {**summary, "status": "failed",
                   "message": error or "the workers stopped without writing status.json"}
    summary["attempts"] = len(run.read_attempts()) - attempts_before
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def _trainer(cfg: Config, allow_config_change: bool, launch_id: str):
    """The ``TorchTrainer`` of the run: its workers, process group, storage and restarts."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from launch.ray_loopback import LoopbackTorchConfig

    gpus = cfg.dist.gpus_per_worker
    resources = {"CPU": cfg.dist.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})}
    embedded = cfg.dist.address is None
    # one machine: the process group listens on loopback like the embedded cluster itself
    torch_config_cls = LoopbackTorchConfig if embedded else TorchConfig
    return (embedded_trainer_class() if embedded else TorchTrainer)(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "allow_config_change": allow_config_change, "launch_id": launch_id},
        scaling_config=ScalingConfig(num_workers=cfg.dist.num_workers, use_gpu=gpus > 0,
                                     resources_per_worker=resources),
        torch_config=torch_config_cls(backend="nccl" if gpus > 0 else "gloo"),
        run_config=RunConfig(
            name=CHECKPOINTS_DIR_NAME, storage_path=str(cfg.train.run_dir),
            failure_config=FailureConfig(max_failures=cfg.dist.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints)),
    )


def _fit(trainer) -> Optional[str]:
    """Run the trainer; the error that ended it, or None."""
    try:
        result = trainer.fit()
    except Exception as e:  # Ray raises when the run failed more than max_failures times
        return f"{type(e).__name__}: {e}"
    return repr(result.error) if getattr(result, "error", None) is not None else None



