"""Is a ``.beton`` whole? Cheap checks before any worker starts, and a full checksum on demand.

A truncated or damaged FFCV file otherwise fails inside the training workers, where Ray
retries it ``dist.max_failures`` times. Cheap (a ``stat`` and 24 bytes): the size is not zero,
the FFCV header is there, its allocation table (the last thing FFCV writes, at the end of the
file) ends exactly at the end of the file, and, where the manifest records them, the size and
the image count match it. Full (``eigenmap prepare --verify``): the SHA-256 of every byte
against the manifest's.

The header is read with numpy rather than ``ffcv.reader.Reader``: importing FFCV takes seconds
(numba), and the launcher must answer in one. ``tests/data/test_data_manifest.py`` checks that
both read the same image count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from eigenmap.durable import sha256_of

from .manifest import ManifestError, manifest_path, read_manifest

__all__ = ["beton_problems", "beton_num_samples", "BetonError"]

# ffcv.types.HeaderType and the size of one ffcv.types.ALLOC_TABLE_TYPE row (FFCV 1.0.2)
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                    ("alloc_table_ptr", "<u8")], align=True)
_FFCV_VERSION = 2
_ALLOC_ROW_BYTES = 24


class BetonError(ValueError):
    """The file is not a readable FFCV file."""


def _header(path: Path) -> np.void:
    with open(path, "rb") as f:
        raw = f.read(_HEADER.itemsize)
    if len(raw) < _HEADER.itemsize:
        raise BetonError(f"'{path}' has {len(raw)} bytes: too short for an FFCV file")
    header = np.frombuffer(raw, dtype=_HEADER)[0]
    if int(header["version"]) != _FFCV_VERSION:
        raise BetonError(f"'{path}' is not an FFCV file of format version {_FFCV_VERSION} "
                         f"(its header says {int(header['version'])})")
    return header


def beton_num_samples(path: Union[str, os.PathLike]) -> int:
    """The image count in the file's FFCV header (what ``ffcv.reader.Reader`` reports).

    Raises:
        BetonError: too short for a header, or not FFCV format version 2.
    """
    return int(_header(Path(path))["num_samples"])


def beton_problems(path: Union[str, os.PathLike], *, checksum: bool = False) -> list[str]:
    """What is wrong with the ``.beton`` at ``path`` (an existing file); empty when nothing.

    Args:
        path: the file; its manifest ``PATH.json`` is used when there is one (a file written
            by FFCV directly has none: then only the file itself is checked).
        checksum: also compare the SHA-256 of the whole file with the manifest's (reads it all).

    Raises:
        ManifestError: a manifest that exists but cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return [f"'{path}' is empty (0 bytes): write it again with `eigenmap prepare SRC {path} --overwrite`"]
    manifest = read_manifest(path) if manifest_path(path).is_file() else None
    problems = []
    if manifest is not None and manifest.get("bytes") is not None and size != manifest["bytes"]:
        problems.append(f"'{path}' has {size} bytes but its manifest records {manifest['bytes']}: the file is "
                        f"truncated or was rewritten; run `eigenmap prepare --verify {path}`")
    try:
        header = _header(path)
    except BetonError as e:
        return problems + [str(e)]
    table = int(header["alloc_table_ptr"])
    if table == 0 or table > size or (size - table) % _ALLOC_ROW_BYTES:
        problems.append(f"'{path}' is truncated: its FFCV allocation table starts at byte {table} of a "
                        f"{size}-byte file and does not end where the file does")
    if manifest is not None and int(header["num_samples"]) != manifest["num_images"]:
        problems.append(f"'{path}' holds {int(header['num_samples'])} images (its FFCV header) but its manifest "
                        f"records {manifest['num_images']}: the file and its manifest do not belong together; "
                        f"write them again with `eigenmap prepare`")
    if checksum and not problems:
        problems += _checksum_problem(path, manifest)
    return problems


def _checksum_problem(path: Path, manifest: Optional[dict]) -> list[str]:
    if manifest is None or not manifest.get("sha256"):
        raise ManifestError(f"'{path}' has no manifest with a checksum to verify against (write it with "
                            f"`eigenmap prepare`, which records one)")
    actual = sha256_of(path)
    if actual != manifest["sha256"]:
        return [f"'{path}' does not match its manifest's checksum (sha256 {actual[:16]}... instead of "
                f"{manifest['sha256'][:16]}...): the file is damaged or was rewritten; write it again with "
                "`eigenmap prepare`"]
    return []
