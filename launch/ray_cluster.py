"""The Ray side shared by training and feature extraction: the cluster, and a ``TorchTrainer`` on it.

- Cluster (:func:`ray_cluster`, :func:`init_ray`): an embedded local one (loopback only,
  dashboard off) when the address is None, else the existing cluster at ``auto`` or
  ``host:port`` (how a job scales out to many nodes).
- Workers (:class:`RayWorkers`, :func:`build_trainer`): N processes, each reserving its CPUs and
  GPUs; the process group is NCCL on GPUs and gloo on CPUs, and on the embedded cluster it
  listens on 127.0.0.1 too (``launch/ray_loopback.py``): nothing of the job is reachable from
  another machine.

Ctrl-C. A terminal sends SIGINT to its whole foreground process group, which holds the driver
and the processes ``ray.init`` starts for an embedded cluster (GCS, raylet, log monitor,
agents): Ray starts those with SIGINT blocked, so it stays pending there and does nothing. The
raylet starts every worker (the controller, each ``RayTrainWorker``, whose training function
runs in a thread) in a session of its own, so the terminal's SIGINT never reaches them. The
driver alone gets it: ``TorchTrainer.fit`` would install Ray Train's handler, which aborts the
workers at once; the trainer built here leaves the caller's handler in place instead
(training stops at a step boundary with a checkpoint, ``launch/ray_runner.py``; with Python's
default a ``KeyboardInterrupt`` ends ``fit`` and the embedded cluster is shut down).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from eigenmap.threads import WAIT_POLICY

__all__ = ["RayWorkers", "init_ray", "ray_cluster", "build_trainer", "quiet_ray_train_logs",
           "quiet_ray_worker_process"]


@dataclass(frozen=True)
class RayWorkers:
    """Where a job's workers run and what each reserves.

    Attributes:
        num_workers: worker processes (one rank each).
        cpus_per_worker, gpus_per_worker: what each reserves (a GPU worker's group is NCCL).
        address: the Ray cluster to join (``auto`` or ``host:port``); None: an embedded local one.
    """

    num_workers: int
    cpus_per_worker: int
    gpus_per_worker: float = 0.0
    address: Optional[str] = None

    @property
    def embedded(self) -> bool:
        return self.address is None

    @property
    def resources(self) -> dict[str, float]:
        gpus = self.gpus_per_worker
        return {"CPU": self.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})}


def quiet_ray_worker_process() -> None:
    """Ray's ``worker_process_setup_hook`` (every worker process of the job, before its actors).

    On a resume the controller logs advice for a user who did not mean to resume ("configure
    a new, unique RunConfig(name) or delete the existing folder"): resuming the run directory
    is what ``eigenmap train`` does, and rank 0 says so itself. A filter on that module's logger
    survives Ray Train's own logging set-up, which resets only levels and handlers.
    """
    try:
        from ray.train.v2._internal.execution.checkpoint import checkpoint_manager
    except ImportError:  # another Ray version: a hook that fails would stop every worker from starting
        return
    logging.getLogger(checkpoint_manager.__name__).addFilter(
        lambda record: "A run snapshot was found" not in record.getMessage())


def quiet_ray_train_logs() -> None:
    """Ray Train logs every reported checkpoint from every rank at INFO ("Checkpoint successfully
    created", "Reporting training result ... metrics={...}"); the run's own progress lines and
    log say the same once. Warnings stay. Call in the training function (after Ray Train's
    logging set-up of the worker)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # that module names its logger by path


def _plain_console() -> None:
    """Settings read when ray is first imported, hence before any import of it here."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # keep the workers' own output format
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")  # Ray's Prometheus metrics: TensorBoard has ours
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to the network
    import sys

    if not sys.stdout.isatty() or not sys.stderr.isatty():
        # a log file gets the workers' "(RayTrainWorker pid=N)" prefixes without colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def init_ray(address: Optional[str], *, num_cpus: int) -> bool:
    """Connect to ``address`` or, when None, start an embedded local cluster of at least
    ``num_cpus`` CPUs; True when this call started it (the caller shuts it down)."""
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
    _plain_console()
    import ray

    if ray.is_initialized():
        return False
    # Ray's workers import torch before eigenmap: OpenMP's wait policy must come in their environment
    runtime_env = {"worker_process_setup_hook": f"{__name__}.quiet_ray_worker_process", "env_vars": dict(WAIT_POLICY)}
    if embedded:
        ray.init(address="local", num_cpus=max(num_cpus, os.cpu_count() or 1), include_dashboard=False,
                 configure_logging=True, logging_level=logging.WARNING, runtime_env=runtime_env)
        return True
    ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env)
    return False


@contextlib.contextmanager
def ray_cluster(workers: RayWorkers) -> Iterator[None]:
    """Ray for the body: :func:`init_ray` for ``workers``, and an embedded cluster this started
    shut down on every way out (a Ctrl-C during its start included)."""
    started = False
    try:
        started = init_ray(workers.address, num_cpus=workers.num_workers * workers.cpus_per_worker)
        yield
    finally:
        import ray

        if started or (workers.embedded and ray.is_initialized()):
            ray.shutdown()


def _trainer_class(embedded: bool):
    """``TorchTrainer`` that keeps the caller's SIGINT handler (see the module's docstring) and,
    on the embedded cluster, has no placement-group cleaner.

    The cleaner is a detached actor that removes the run's placement group if the controller
    dies; it polls the controller's state through the State API every second, which needs the
    dashboard (off here), so it logged "Failed to query Ray Train Controller actor state" once a
    second for the whole run. On an embedded cluster the placement group dies with the cluster
    when the run ends, so the cleaner has nothing to do.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class EigenmapTorchTrainer(TorchTrainer):
        def _register_sigint_handler(self, controller) -> None:
            pass  # Ray Train's would abort the workers at the first Ctrl-C, without a checkpoint

        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks()
                    if not (embedded and isinstance(c, PlacementGroupCleanerCallback))]

    return EigenmapTorchTrainer


def build_trainer(loop: Callable[[dict], None], loop_config: dict[str, Any], workers: RayWorkers, *,
                  storage_path: str, name: str, failure_config: Any = None, checkpoint_config: Any = None):
    """The ``TorchTrainer`` that runs ``loop(loop_config)`` on ``workers``.

    Args:
        loop, loop_config: the function every worker runs, and its argument.
        workers: how many, with what, on which cluster (:func:`ray_cluster` must be entered).
        storage_path, name: Ray Train's storage (``storage_path/name`` holds its snapshot and
            the checkpoints reported).
        failure_config, checkpoint_config: ``ray.train.FailureConfig`` / ``CheckpointConfig``
            (None: Ray's defaults, no restart).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from launch.ray_loopback import LoopbackTorchConfig

    # one machine: the process group listens on loopback like the embedded cluster itself
    torch_config_cls = LoopbackTorchConfig if workers.embedded else TorchConfig
    return _trainer_class(workers.embedded)(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.gpus_per_worker > 0,
                                     resources_per_worker=workers.resources),
        torch_config=torch_config_cls(backend="nccl" if workers.gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path, failure_config=failure_config,
                             checkpoint_config=checkpoint_config),
    )
