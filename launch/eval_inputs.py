"""What the evaluation commands share: reading a run, and getting a dataset's arrays through it.

A dataset argument is a ``.beton`` (its arrays are extracted through the run's model, once,
into ``RUN/eval/features/<name>/`` and reused while the weights and the file are unchanged)
or a feature folder that ``eigenmap extract`` wrote (read as is). Extraction runs as one plain
process, or on Ray workers with ``--workers N`` (each worker its evaluation shard, the same
launcher as training).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

import torch

from eigenmap.eval.features import SIDECAR, FeatureSet, extract_features, feature_folder, load_features, matches
from eigenmap.run_dir import LoadedRun, load_run
from launch.arg_types import int_at_least

log = logging.getLogger(__name__)

__all__ = ["add_extraction_arguments", "pick_device", "dataset_arrays", "is_feature_folder", "extract", "open_run",
           "different_sets", "same_classes"]


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
    """``--device``, or CUDA when torch sees a GPU, else the CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA device here; accepted: cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_feature_folder(path: Path) -> bool:
    return path.is_dir() and (path / SIDECAR).is_file()


def dataset_arrays(run: Optional[LoadedRun], run_dir: Optional[Path], data: Path, args: argparse.Namespace,
                   device: torch.device) -> FeatureSet:
    """The arrays of ``data`` (a ``.beton`` through ``run``'s model, or a feature folder)."""
    if is_feature_folder(data):
        return load_features(data)
    if data.is_dir():
        raise ValueError(f"'{data}' is a folder without {SIDECAR}: pass a .beton (written by `eigenmap prepare`) "
                         "or a feature folder written by `eigenmap extract`")
    if not data.is_file():
        raise ValueError(f"'{data}' does not exist; accepted: a .beton written by `eigenmap prepare`, or a "
                         "feature folder written by `eigenmap extract`")
    if run is None or run_dir is None:
        raise ValueError(f"'{data}' is a dataset file: pass the RUN whose encoder should read it")
    folder = feature_folder(run_dir, data, scale_by_eigenvalue=args.scale_by_eigenvalue)
    if is_feature_folder(folder):
        cached = load_features(folder)
        if matches(cached.meta, data_path=data.resolve(), weights=run.weights,
                   scale_by_eigenvalue=args.scale_by_eigenvalue, resolution=run.config.data.resolution):
            log.info("reusing the arrays of %s in %s (same weights, same file)", data.name, folder)
            return cached
    return extract(run, run_dir, data, folder, args, device)


def different_sets(first: FeatureSet, second: FeatureSet, roles: tuple[str, str], consequence: str) -> None:
    """Refuse two roles given the same images: one feature folder, or arrays of one dataset file
    (its name, size and modification time; a copy that kept them holds the same images too).

    Raises:
        ValueError: naming the set and ``consequence``, what scoring a set against itself does.
    """
    a, b = (s.meta["dataset"] for s in (first, second))
    same_file = (Path(a["path"]).name == Path(b["path"]).name
                 and all(a.get(key) == b.get(key) for key in ("bytes", "mtime")))
    if first.folder.resolve() == second.folder.resolve() or same_file:
        raise ValueError(f"{roles[0]} and {roles[1]} are the same images ('{a['path']}'): {consequence}; accepted: "
                         f"{roles[1]} held out from {roles[0]} (e.g. val/ against train/)")


def same_classes(first: FeatureSet, second: FeatureSet, roles: tuple[str, str]) -> int:
    """The number of classes of two feature sets whose labels index the same class list.

    Raises:
        ValueError: their datasets list different classes, so label i would not mean one class in
            both (e.g. a validation folder without one of the training folder's classes).
    """
    a, b = (s.meta["dataset"]["classes"] for s in (first, second))
    if a != b:
        missing = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"{roles[0]} and {roles[1]} label different class lists ({len(a)} vs {len(b)} classes"
                         + (f"; in one only: {', '.join(missing)}" if missing else "; in another order")
                         + "); accepted: two splits of one dataset, written from folders with the same class "
                         "folders (an empty class folder keeps its label)")
    return len(a)


def extract(run: LoadedRun, run_dir: Path, data: Path, folder: Path, args: argparse.Namespace,
            device: torch.device) -> FeatureSet:
    """Extract ``data``'s arrays into ``folder``: here, or on ``--workers`` Ray workers."""
    if args.workers > 0:
        from launch.ray_eval import extract_on_ray

        return extract_on_ray(run_dir, data, folder, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                              gpus_per_worker=args.gpus_per_worker, address=args.address, batch_size=args.batch_size,
                              scale_by_eigenvalue=args.scale_by_eigenvalue)
    return extract_features(run.model.to(device), run.config, data, folder, weights=run.weights, step=run.step,
                            batch_size=args.batch_size, device=device,
                            scale_by_eigenvalue=args.scale_by_eigenvalue)


def open_run(run_dir: Optional[Path], device: torch.device) -> Optional[LoadedRun]:
    """``load_run`` of the RUN argument (None when the command was given no run)."""
    return load_run(run_dir, device=device) if run_dir is not None else None
