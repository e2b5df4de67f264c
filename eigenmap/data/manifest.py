"""The manifest written next to every ``.beton``: classes, counts and skipped files.

``OUT.beton`` gets ``OUT.beton.json``. Keys (all always present):

- ``classes``: class names in stable sorted order (a list file's: in flag order); the index in
  the list is the label.
- ``label_kind``: ``"single"`` (each image one class index, an FFCV ``IntField``) or ``"multi"``
  (each image a multi-hot row of ``num_labels`` 0/1 flags, an FFCV ``NDArrayField`` of uint8
  ``[C]``: list files of multi-label sets such as COCO or NUS-WIDE); absent from manifests
  written before version 3, which are all single-label.
- ``num_labels``: C, the number of classes (``len(classes)``); absent before version 3.
- ``counts``: ``{class name: images written}``, in label order; multi-label: the images that
  carry each label (a sum over labels counts an image once per label it carries).
- ``num_images``: images in the ``.beton`` (its number of samples).
- ``bytes``, ``sha256``: the ``.beton``'s size and checksum, so a truncated, damaged or
  replaced file is found before training (:mod:`eigenmap.data.beton_check`); absent from
  manifests written before they were recorded.
- ``skipped``: ``[{"path": ..., "reason": ...}]``, every input file that was not written; from a
  list file ``[{"path", "line", "reason"}]``, every line not written (unreadable lines and
  missing or bad images), in line order.
- ``max_resolution``: the ``--max-resolution`` used (longest side, px), or null for none.
- ``source``, ``source_kind`` (``imagefolder``, ``idx`` or ``list``), ``write_mode``,
  ``jpeg_quality``, ``label_names`` (human-readable names where known, else null),
  ``format_version``.

From a list file only: ``list_root`` (where its relative paths start) and, multi-label,
``num_without_labels`` (written images with no flag set: no query finds them relevant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from eigenmap.durable import atomic_write_text

__all__ = ["ManifestError", "manifest_path", "read_manifest", "write_manifest", "dataset_identity",
           "MANIFEST_VERSION"]

MANIFEST_VERSION = 3  # 2: records the file's bytes and sha256; 3: label_kind and num_labels
REQUIRED_KEYS = ("classes", "counts", "num_images", "skipped", "max_resolution")


class ManifestError(ValueError):
    """The manifest is missing or malformed."""


def manifest_path(beton_path: Union[str, os.PathLike]) -> Path:
    """``OUT.beton`` -> ``OUT.beton.json``."""
    p = Path(beton_path)
    return p.with_name(p.name + ".json")


def read_manifest(beton_path: Union[str, os.PathLike]) -> dict:
    """Read the manifest that ``eigenmap prepare`` wrote next to ``beton_path``.

    Args:
        beton_path: the ``.beton`` file (not the ``.json``).

    Returns:
        The manifest as a dict (see the module docstring for the keys).

    Raises:
        ManifestError: the file is missing, not JSON, or lacks a required key.
    """
    path = manifest_path(beton_path)
    if not path.is_file():
        raise ManifestError(
            f"manifest '{path}' not found; write '{beton_path}' with `eigenmap prepare SRC {beton_path}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"manifest '{path}' is not readable JSON: {e}") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"manifest '{path}' lacks keys {missing}; rewrite it with `eigenmap prepare`")
    return manifest


def write_manifest(manifest: dict, path: Union[str, os.PathLike]) -> None:
    """Write ``manifest`` as JSON to ``path`` atomically and durably (a temporary file, fsync,
    then a rename)."""
    atomic_write_text(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def dataset_identity(beton_path: str) -> Optional[dict]:
    """What identifies a training file's contents, from its manifest (no hashing here):
    ``{"path", "bytes", "sha256", "num_images"}``; None without a readable manifest (the
    synthetic source, a file written by FFCV directly)."""
    if not beton_path or not manifest_path(beton_path).is_file():
        return None
    try:
        manifest = read_manifest(beton_path)
    except ManifestError:
        return None
    return {"path": str(beton_path), "bytes": manifest.get("bytes"), "sha256": manifest.get("sha256"),
            "num_images": manifest["num_images"]}
