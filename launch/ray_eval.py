"""Feature extraction on Ray workers: the same cluster and launcher as training.

Each worker loads the run, reads its contiguous evaluation shard of the ``.beton`` and writes
its own rows of the feature folder's memory-mapped arrays (the folder must be on a filesystem
every worker sees, as the run directory already is); rank 0 gathers the labels and writes the
sidecar. See :func:`eigenmap.eval.features.extract_features`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from eigenmap.eval.features import FeatureSet, load_features
from eigenmap.run import RunDir
from launch.ray_cluster import RayWorkers, build_trainer, quiet_ray_train_logs, ray_cluster

__all__ = ["extract_on_ray"]


def _extract_per_worker(config: dict) -> None:
    """Ray Train entry point of one extraction worker."""
    import ray.train
    from ray.train.torch import get_device

    from eigenmap.eval.features import extract_features
    from eigenmap.host_memory import keep_freed_memory
    from eigenmap.run import load_run
    from eigenmap.threads import set_torch_threads

    quiet_ray_train_logs()
    device = get_device()
    if device.type == "cpu":
        set_torch_threads(config["cpus_per_worker"])
        keep_freed_memory()
    run = load_run(config["run_dir"], device=device)
    extract_features(run.model, run.config, config["data"], config["folder"], weights=run.weights, step=run.step,
                     batch_size=config["batch_size"], device=device,
                     scale_by_eigenvalue=config["scale_by_eigenvalue"],
                     progress=ray.train.get_context().get_world_rank() == 0)


def extract_on_ray(run_dir: Path, data: Path, folder: Path, *, workers: int, cpus_per_worker: int,
                   gpus_per_worker: Optional[float], address: Optional[str], batch_size: int,
                   scale_by_eigenvalue: bool) -> FeatureSet:
    """Extract ``data``'s arrays through the run's model on ``workers`` Ray workers into ``folder``.

    ``gpus_per_worker`` None: one GPU each when this machine has one; ``address`` None: an
    embedded local cluster (see :mod:`launch.ray_cluster`).
    """
    gpus = gpus_per_worker if gpus_per_worker is not None else float(torch.cuda.is_available())
    on = RayWorkers(workers, cpus_per_worker, gpus, address)
    with ray_cluster(on):
        trainer = build_trainer(
            _extract_per_worker,
            {"run_dir": str(Path(run_dir).resolve()), "data": str(Path(data).resolve()),
             "folder": str(Path(folder).resolve()), "batch_size": batch_size,
             "scale_by_eigenvalue": scale_by_eigenvalue, "cpus_per_worker": cpus_per_worker},
            on, storage_path=str(RunDir(run_dir).ray_storage.resolve()), name=f"extract-{os.getpid()}")
        result = trainer.fit()
        if getattr(result, "error", None) is not None:
            raise RuntimeError(f"feature extraction on Ray failed: {result.error!r}")
    return load_features(folder)
