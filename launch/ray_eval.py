"""Feature extraction on Ray workers: the same cluster and launcher as training.

Each worker loads the run, reads its contiguous evaluation shard of the ``.beton`` and writes
its own rows of the feature folder's memory-mapped arrays (the folder must be on a filesystem
every worker sees, as the run directory already is); rank 0 gathers the labels and writes the
sidecar. See :func:`eigenmap.eval.features.extract_features`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from eigenmap.config import load_config
from eigenmap.eval.features import FeatureSet, load_features
from eigenmap.run_layout import RunDir

__all__ = ["extract_on_ray"]


def _extract_per_worker(config: dict) -> None:
    """Ray Train entry point of one extraction worker."""
    import ray.train
    from ray.train.torch import get_device

    from eigenmap.eval.features import extract_features
    from eigenmap.host_memory import keep_freed_memory
    from eigenmap.run_dir import load_run
    from launch.ray_runner import quiet_ray_train_logs

    quiet_ray_train_logs()
    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(config["cpus_per_worker"])
        keep_freed_memory()
    run = load_run(config["run_dir"], device=device)
    extract_features(run.model, run.config, config["data"], config["folder"], weights=run.weights, step=run.step,
                     batch_size=config["batch_size"], device=device,
                     scale_by_eigenvalue=config["scale_by_eigenvalue"],
                     progress=ray.train.get_context().get_world_rank() == 0)


def extract_on_ray(run_dir: Path, data: Path, folder: Path, args: argparse.Namespace) -> FeatureSet:
    """Extract ``data``'s arrays through the run's model on ``args.workers`` Ray workers."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from launch.ray_loopback import LoopbackTorchConfig
    from launch.ray_runner import embedded_trainer_class, init_ray

    cfg = load_config(RunDir(run_dir).config)
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else float(torch.cuda.is_available())
    cfg.dist.num_workers, cfg.dist.cpus_per_worker = args.workers, args.cpus_per_worker
    cfg.dist.gpus_per_worker, cfg.dist.address = gpus, args.address
    embedded = args.address is None
    we_started = init_ray(cfg)
    try:
        trainer_cls = embedded_trainer_class() if embedded else TorchTrainer
        config_cls = LoopbackTorchConfig if embedded else TorchConfig
        trainer = trainer_cls(
            _extract_per_worker,
            train_loop_config={"run_dir": str(Path(run_dir).resolve()), "data": str(data.resolve()),
                               "folder": str(folder.resolve()), "batch_size": args.batch_size,
                               "scale_by_eigenvalue": args.scale_by_eigenvalue,
                               "cpus_per_worker": args.cpus_per_worker},
            scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=gpus > 0,
                                         resources_per_worker={"CPU": args.cpus_per_worker,
                                                               **({"GPU": gpus} if gpus > 0 else {})}),
            torch_config=config_cls(backend="nccl" if gpus > 0 else "gloo"),
            run_config=RunConfig(name=f"extract-{os.getpid()}", storage_path=str(RunDir(run_dir).ray_storage.resolve())),
        )
        result = trainer.fit()
        if getattr(result, "error", None) is not None:
            raise RuntimeError(f"feature extraction on Ray failed: {result.error!r}")
    finally:
        if we_started:
            import ray

            ray.shutdown()
    return load_features(folder)
