"""What the evaluation commands share on the command line: the extraction options, the device,
and the extractor (this process, or Ray workers) that :mod:`eigenmap.eval.inputs` calls.

The evaluation path itself (describing and checking sets, caching arrays, the probe and kNN)
lives in :mod:`eigenmap.eval`; this module only turns arguments into its plain parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from eigenmap.eval.features import FeatureSet, extract_features
from eigenmap.eval.inputs import Extractor
from eigenmap.run import LoadedRun
from eigenmap.threads import set_torch_threads
from eigenmap.train.exit_codes import exit_code
from launch.arg_types import int_at_least

__all__ = ["add_extraction_arguments", "pick_device", "extractor", "INTERRUPTED"]

# exit code of an evaluation command stopped by Ctrl-C: training's, 128 + SIGINT as a shell reports it
INTERRUPTED = exit_code("interrupted")


def add_extraction_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every command that may run the encoder over a dataset."""
    p.add_argument("--batch-size", type=int_at_least("--batch-size", 1), default=256, metavar="N",
                   help="images per forward pass (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--scale-by-eigenvalue", action="store_true",
                   help="codes times sqrt(eigenvalue) (NeuralEF); default: psi / sqrt(running mean square)")
    p.add_argument("--workers", type=int_at_least("--workers", 0), default=0, metavar="N",
                   help="extract on N Ray workers, each its shard (0 = this process, the default)")
    p.add_argument("--address", default=None, help="Ray cluster for --workers (default: an embedded local one)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Ray worker (default: 1 if CUDA)")
    p.add_argument("--cpus-per-worker", type=int_at_least("--cpus-per-worker", 1), default=1,
                   help="CPUs per Ray worker (default 1)")


def pick_device(name: Optional[str]) -> torch.device:
    """``--device``, or CUDA when torch sees a GPU, else the CPU. torch's CPU threads are sized
    to the CPUs this process may use (:func:`eigenmap.threads.set_torch_threads`)."""
    set_torch_threads()
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA device here; accepted: cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def extractor(args: argparse.Namespace, run: LoadedRun, run_dir: Path, device: torch.device) -> Extractor:
    """``(data, folder) -> FeatureSet``: ``data``'s arrays through ``run``'s model into ``folder``,
    in this process or on ``--workers`` Ray workers (each its shard)."""
    def extract(data: Path, folder: Path) -> FeatureSet:
        if args.workers > 0:
            from launch.ray_eval import extract_on_ray

            return extract_on_ray(run_dir, data, folder, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                  gpus_per_worker=args.gpus_per_worker, address=args.address,
                                  batch_size=args.batch_size, scale_by_eigenvalue=args.scale_by_eigenvalue)
        return extract_features(run.model.to(device), run.config, data, folder, weights=run.weights, step=run.step,
                                batch_size=args.batch_size, device=device,
                                scale_by_eigenvalue=args.scale_by_eigenvalue)

    return extract
