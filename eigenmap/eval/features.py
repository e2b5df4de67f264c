"""Encoder features and eigenfunction codes of a dataset, extracted once and kept on disk.

A feature folder holds

- ``features.npy``: [N, F] float32 encoder outputs (what the linear probe and kNN read);
- ``codes.npy``: [N, k] float32 eigenfunction outputs with the L2-BatchNorm inference
  normalisation psi / sqrt(running mean square) (optionally times sqrt(eigenvalue)); other
  objectives store the raw projector output;
- ``thumbnails.npy``: [N, 256] float32 pixel signatures of the images as the encoder saw them
  (grey, 16 x 16 averages, centred and L2-normalised; :func:`thumbnails`): a near-duplicate
  image across two sets is found by them whatever the model learnt (:mod:`eigenmap.eval.overlap`);
- ``labels.npy``: [N] int64 class indices, or [N, C] uint8 multi-hot rows of 0/1 (a multi-label
  dataset, written from a list file), in dataset order;
- ``features.json``: the sidecar (run, weights with the sha256 of their contents and their step,
  dataset file with its size and the sha256 of its contents, shapes, device, precision,
  seconds). It is written last: a folder without it is incomplete, and an interrupted
  extraction removes its partial folder.

The arrays are written as they are extracted (``.npy`` memory maps), never held whole in RAM,
so ImageNet's 1.28 M x 8,192 codes (42 GB) only need the disk. With several workers (each its
contiguous evaluation shard, see :func:`eigenmap.data.sharding.eval_shard`), each writes its
own rows of the same files on a filesystem they all see, and the labels come to rank 0 with
:func:`eigenmap.dist.gather_uneven`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from eigenmap import dist
from eigenmap.config import Config
from eigenmap.data import build_eval_loader, read_manifest
from eigenmap.durable import sha256_of
from eigenmap.models import EigenmapModel
from eigenmap.run import RunDir
from retrieval.progress import Progress

__all__ = ["FeatureSet", "FeatureError", "extract_features", "load_features", "feature_folder", "matches",
           "weights_identity", "thumbnails", "SIDECAR"]

log = logging.getLogger(__name__)

FEATURES, CODES, LABELS, SIDECAR = "features.npy", "codes.npy", "labels.npy", "features.json"
THUMBNAILS = "thumbnails.npy"
THUMBNAIL_SIDE = 16  # 256 values: measured to tell a re-encoded copy (cosine >= 0.994) from another image


class FeatureError(ValueError):
    """A feature folder is missing, incomplete, or does not match what was asked for."""


@dataclass
class FeatureSet:
    """Arrays of one dataset through one model (read-only memory maps) and their sidecar."""

    folder: Path
    features: Optional[np.ndarray]  # [N, F] float32 (None: a folder of arrays without them)
    codes: Optional[np.ndarray]  # [N, k] float32 (likewise)
    labels: np.ndarray  # [N] int64, or [N, C] 0/1 flags of a multi-label set
    meta: dict
    thumbnails: Optional[np.ndarray] = None  # [N, 256] float32 pixel signatures (None: not extracted here)


def feature_folder(run_dir: Union[str, Path], data_path: Union[str, Path], *, scale_by_eigenvalue: bool = False) -> Path:
    """Where a run keeps the arrays of one dataset: ``RUN/eval/features/<file stem>[-eigscaled]``."""
    stem = Path(data_path).name.removesuffix(".beton")
    return RunDir(run_dir).features(stem + ("-eigscaled" if scale_by_eigenvalue else ""))


def load_features(folder: Union[str, Path]) -> FeatureSet:
    """A complete feature folder as read-only memory maps.

    Raises:
        FeatureError: the folder or its sidecar is missing (an interrupted extraction), or the
            arrays disagree with the sidecar.
    """
    folder = Path(folder)
    sidecar = folder / SIDECAR
    if not sidecar.is_file():
        raise FeatureError(f"'{folder}' is not a complete feature folder (no {SIDECAR}); extract the arrays "
                           "with `eigenmap extract RUN DATA.beton`")
    meta = json.loads(sidecar.read_text())
    arrays = {}
    for name, file in (("features", FEATURES), ("codes", CODES), ("labels", LABELS)):
        try:
            arrays[name] = np.load(folder / file, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise FeatureError(f"'{folder / file}' is unreadable ({e}); extract the arrays again") from None
        if list(arrays[name].shape) != meta["shapes"][name]:
            raise FeatureError(f"'{folder / file}' has shape {list(arrays[name].shape)} but {SIDECAR} says "
                               f"{meta['shapes'][name]}; extract the arrays again")
    thumbs = None
    if "thumbnails" in meta["shapes"]:  # folders extracted before thumbnails were kept have none
        thumbs = np.load(folder / THUMBNAILS, mmap_mode="r")
    return FeatureSet(folder, arrays["features"], arrays["codes"], arrays["labels"], meta, thumbs)


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """Pixel signatures of a batch: [B, C, H, W] images -> [B, 256] float32, the grey image's
    16 x 16 block averages, centred and L2-normalised. A re-encoded or rescaled copy of an image
    keeps its signature (cosine >= 0.994 at JPEG quality 80 on Imagenette); other images of one
    dataset stayed below 0.93."""
    grey = images.float().mean(dim=1, keepdim=True)
    t = torch.nn.functional.adaptive_avg_pool2d(grey, THUMBNAIL_SIDE).flatten(1)
    return torch.nn.functional.normalize(t - t.mean(dim=1, keepdim=True), dim=1)


def _file_identity(path: Path) -> dict:
    """Name, size and modification time of a file (what says it was not replaced since)."""
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime": stat.st_mtime}


def weights_identity(path: Path) -> dict:
    """The weights file's identity and the sha256 of its contents: a cache made from it stays
    valid when the file is touched or copied, and not when other weights replace it with the
    same size."""
    return {**_file_identity(path), "sha256": sha256_of(path)}


def _dataset_identity(data_path: Path) -> dict:
    """The file's identity and the sha256 of its contents, from the manifest ``eigenmap prepare``
    wrote (None for a manifest from before checksums were recorded)."""
    return {**_file_identity(data_path), "sha256": read_manifest(data_path).get("sha256")}


def matches(meta: dict, *, data_path: Path, weights: Path, scale_by_eigenvalue: bool, resolution: int) -> bool:
    """Whether a sidecar describes these weights on this dataset file's contents, as asked: both
    by content (sha256), not by modification time; sidecars from before the weights' checksum
    was recorded fall back to the weights file's size and time."""
    saved, now = meta.get("dataset", {}), _dataset_identity(data_path)
    # the contents' checksum when both sides know it (a copy or a move keeps it), else the file
    same_data = (saved["sha256"] == now["sha256"] if saved.get("sha256") and now["sha256"]
                 else all(saved.get(key) == now[key] for key in ("bytes", "mtime")))
    saved_weights = meta.get("weights") or {}
    same_weights = (saved_weights["sha256"] == sha256_of(weights) if saved_weights.get("sha256")
                    else saved_weights == _file_identity(weights))
    return (same_data and same_weights
            and meta.get("scale_by_eigenvalue") == scale_by_eigenvalue and meta.get("resolution") == resolution)


@torch.no_grad()
def extract_features(model: EigenmapModel, cfg: Config, data_path: Union[str, Path], folder: Union[str, Path], *,
                     weights: Union[str, Path], step: Optional[int], batch_size: int = 256,
                     device: Union[str, torch.device] = "cpu", scale_by_eigenvalue: bool = False,
                     progress: bool = True) -> Optional[FeatureSet]:
    """Run the evaluation pipeline (resize, centre crop, normalise) of ``data_path`` through
    ``model`` and write a feature folder. Collective when a process group exists: every rank
    extracts its shard; rank 0 returns the :class:`FeatureSet`, the others None.

    Args:
        model: the trained model, in eval mode, on ``device``.
        cfg: the run's resolved config (``data.resolution``, ``eval_resize``, normalisation,
            ``loader_workers``).
        data_path: a ``.beton`` written by ``eigenmap prepare``.
        folder: where the arrays go (replaced when complete; an old folder stays valid until then).
        weights, step: recorded in the sidecar (what the arrays came from).
        batch_size: images per forward pass.
        device: bf16 autocast on CUDA, fp32 on the CPU.
        scale_by_eigenvalue: codes times sqrt(max(eigenvalue, 0)) (NeuralEF models).
        progress: a progress bar on rank 0.

    Returns:
        The :class:`FeatureSet` on rank 0, None elsewhere.
    """
    device = torch.device(device)
    data_path, folder = Path(data_path).resolve(), Path(folder)
    rank, world = dist.get_rank(), dist.get_world_size()
    manifest = read_manifest(data_path)
    loader = build_eval_loader(cfg.data, data_path, batch_size=batch_size, rank=rank, world_size=world, device=device)
    n, feat_dim, k = loader.num_samples, model.feat_dim, cfg.model.projector_out_dim
    # rank 0 names the temporary folder; every rank writes its own rows of the same files there
    tmp = Path(dist.broadcast_object(str(folder.with_name(f".{folder.name}.partial-{os.getpid()}"))))
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, width in ((FEATURES, feat_dim), (CODES, k), (THUMBNAILS, THUMBNAIL_SIDE ** 2)):
            np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.float32, shape=(n, width)).flush()
    dist.barrier()
    try:
        return _fill(model, cfg, loader, manifest, data_path, tmp, folder, weights=weights, step=step,
                     device=device, scale_by_eigenvalue=scale_by_eigenvalue, progress=progress)
    except BaseException:  # Ctrl-C or a failure: no partial arrays are left behind
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fill(model: EigenmapModel, cfg: Config, loader, manifest: dict, data_path: Path, tmp: Path, folder: Path, *,
          weights, step, device: torch.device, scale_by_eigenvalue: bool, progress: bool) -> Optional[FeatureSet]:
    """Write this rank's rows of ``tmp``'s arrays; rank 0 then adds the labels and the sidecar
    and renames ``tmp`` to ``folder`` (see :func:`extract_features`)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    n, feat_dim, k = loader.num_samples, model.feat_dim, cfg.model.projector_out_dim
    features = np.load(tmp / FEATURES, mmap_mode="r+")
    codes = np.load(tmp / CODES, mmap_mode="r+")
    thumbs = np.load(tmp / THUMBNAILS, mmap_mode="r+")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    row = start_row = int(loader.indices[0]) if len(loader.indices) else 0
    labels = []
    started = time.perf_counter()
    first_batch_at = None  # (wall, process CPU) seconds when the first batch came
    bar = Progress(len(loader), f"features of {data_path.name}") if progress and rank == 0 else None
    for images, batch_labels in loader:
        if first_batch_at is None:
            # FFCV compiles its pipeline (numba) when the first batch is asked for: a fixed start
            # that a large dataset amortises, kept apart from the rate the loader sustains
            first_batch_at = (time.perf_counter(), time.process_time())
        with autocast:
            feats, c = model.features_and_codes(images, scale_by_eigenvalue)
        rows = slice(row, row + len(images))
        features[rows] = feats.float().cpu().numpy()
        codes[rows] = c.cpu().numpy()
        thumbs[rows] = thumbnails(images).cpu().numpy()
        labels.append(batch_labels.cpu())
        row += len(images)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    loop_done = (time.perf_counter(), time.process_time())
    features.flush()
    codes.flush()
    thumbs.flush()
    del features, codes, thumbs
    multi = bool(loader.label_shape)  # multi-hot rows [C] (a multi-label list), else class indices
    label_dtype = torch.uint8 if multi else torch.int64
    mine = torch.cat(labels) if labels else torch.zeros((0, *loader.label_shape), dtype=label_dtype)
    all_labels = dist.gather_uneven(mine.to(device) if device.type == "cuda" else mine).cpu()
    dist.barrier()
    seconds = time.perf_counter() - started  # every shard done
    if rank != 0:
        return None
    np.save(tmp / LABELS, all_labels.numpy().astype(np.uint8 if multi else np.int64))
    meta = {
        "format_version": 2, "weights": weights_identity(Path(weights)), "step": step,
        "dataset": {**_dataset_identity(data_path), "num_images": n, "classes": manifest["classes"],
                    "label_kind": "multi" if multi else "single", "num_labels": len(manifest["classes"])},
        "scale_by_eigenvalue": scale_by_eigenvalue, "resolution": cfg.data.resolution,
        "eval_resize": cfg.data.eval_resize, "arch": cfg.model.arch, "loss": cfg.loss.name,
        "shapes": {"features": [n, feat_dim], "codes": [n, k], "labels": [n, *loader.label_shape],
                   "thumbnails": [n, THUMBNAIL_SIDE ** 2]},
        "dtype": "float32",
        "device": str(device), "precision": "bf16" if device.type == "cuda" else "fp32", "workers": world,
        "seconds": seconds, "images_per_second": n / seconds if seconds > 0 else None,
        **_steady_rate(started, first_batch_at, loop_done, row - start_row),
    }
    (tmp / SIDECAR).write_text(json.dumps(meta, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log.info("extracted %d images of %s in %.1f s (%.0f images/s): %s", n, data_path.name, seconds,
             n / max(seconds, 1e-9), folder)
    return load_features(folder)


def _steady_rate(started: float, first_batch_at: Optional[tuple[float, float]], loop_done: tuple[float, float],
                 rows: int) -> dict:
    """Rank 0's start (seconds to its first batch: pipeline compilation, first decode) and the
    rate it sustained from then on: all ``rows`` images over the seconds from the first batch's
    arrival to the end of the loop, a window that holds every image's forward, the first batch's
    included; and the CPU time (this process, all threads: decode, forward, writes) per image in
    that window. None without a batch. ``first_batch_at`` and ``loop_done`` are (wall, process
    CPU) seconds."""
    if first_batch_at is None or rows < 1:
        return {"first_batch_seconds": None, "steady_images_per_second": None, "steady_cpu_ms_per_image": None}
    wall, cpu = loop_done[0] - first_batch_at[0], loop_done[1] - first_batch_at[1]
    return {"first_batch_seconds": first_batch_at[0] - started,
            "steady_images_per_second": rows / wall if wall > 0 else None,
            "steady_cpu_ms_per_image": 1000 * cpu / rows}
