"""The manifest written next to every ``.beton``: classes, counts and skipped files.

``OUT.beton`` gets ``OUT.beton.json``. Keys (all always present):

- ``classes``: class names in stable sorted order; the index in the list is the label.
- ``counts``: ``{class name: images written}``, in label order.
- ``num_images``: images in the ``.beton`` (its number of samples).
- ``skipped``: ``[{"path": ..., "reason": ...}]``, every input file that was not written.
- ``max_resolution``: the ``--max-resolution`` used (longest side, px), or null for none.
- ``source``, ``source_kind`` (``imagefolder`` or ``idx``), ``write_mode``, ``jpeg_quality``,
  ``label_names`` (human-readable names where known, else null), ``format_version``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

__all__ = ["ManifestError", "manifest_path", "read_manifest", "write_manifest", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1
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
    """Write ``manifest`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
