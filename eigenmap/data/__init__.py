"""Data: ImageFolder / list file / IDX -> FFCV writer, two-view loaders, batched augmentations.

- :func:`write_beton` (``eigenmap prepare``): source -> ``.beton`` + manifest;
  :func:`stored_side_for`: the longest side worth storing for a training resolution.
- :func:`read_manifest`: classes, counts, skipped files of a ``.beton``.
- :func:`build_train_loader`: FFCV two-view loader of one worker's shard (uint8 views).
- :class:`BatchAugment`: per-sample colour jitter, grayscale, blur, solarise, normalise on
  the device.
- :func:`build_eval_loader`: deterministic resize + centre crop, normalised.
- :class:`SyntheticTwoViewLoader`: random pairs made on the device (``data.train_path:
  synthetic``, the :data:`SYNTHETIC` sentinel), for benchmarks and GPU checks.

Heavy modules (FFCV, numba, torchvision) are imported when a function needs them.
"""

from .augment import BatchAugment
from .ffcv_loaders import EvalLoader, TwoViewLoader, build_eval_loader, build_train_loader
from .manifest import ManifestError, manifest_path, read_manifest
from .sharding import epoch_permutation, eval_shard, steps_per_epoch, train_shard
from .sources import SourceError
from .synthetic import SYNTHETIC, SyntheticTwoViewLoader
from .writer import WriterError, stored_side_for, write_beton

__all__ = [
    "BatchAugment",
    "EvalLoader",
    "ManifestError",
    "SYNTHETIC",
    "SourceError",
    "SyntheticTwoViewLoader",
    "TwoViewLoader",
    "WriterError",
    "build_eval_loader",
    "build_train_loader",
    "epoch_permutation",
    "eval_shard",
    "manifest_path",
    "read_manifest",
    "steps_per_epoch",
    "stored_side_for",
    "train_shard",
    "write_beton",
]
