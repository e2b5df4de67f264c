"""Files that survive a crash: fsync before the rename that publishes them, and digests.

A rename publishes a file atomically, but after a power loss or a node crash the new name can
point at data the kernel never wrote out (ext4, xfs: the rename is journalled, the data may
not be). So every publishing rename here comes after an ``fsync`` of the data and is followed
by an ``fsync`` of the directory that holds the name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator, Union

__all__ = ["fsync_file", "fsync_dir", "fsync_tree", "publish", "atomic_write_bytes", "atomic_write_text",
           "sha256_of", "describe_files", "folder_lock"]

PathLike = Union[str, os.PathLike]
_CHUNK = 1 << 22  # 4 MiB reads: hashing runs at disk speed without holding big buffers


def fsync_file(path: PathLike) -> None:
    """Flush ``path``'s data to the device (opening read-only is enough for fsync on Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike) -> None:
    """Flush ``path``'s entries (names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: PathLike) -> None:
    """fsync every file and directory under ``root`` (``root`` included), deepest first."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def publish(tmp: PathLike, final: PathLike) -> None:
    """Rename the complete ``tmp`` (a file or a directory tree) to ``final`` durably: its data
    is flushed first, the parent directory after."""
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():
        fsync_tree(tmp)
    else:
        fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_of(path: PathLike) -> str:
    """Hex SHA-256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root: PathLike, *, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """``{relative path: {"bytes": size, "sha256": hex}}`` of every file under ``root``, names
    in ``exclude`` (file names, any depth) left out."""
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in exclude):
        out[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    return out


@contextlib.contextmanager
def folder_lock(folder: PathLike, *, shared: bool = False) -> Iterator[None]:
    """``flock`` on the folder itself for the body: exclusive for a writer publishing several
    files that belong together, shared for a reader that must not see half of them. No lock
    file is left behind. Where the filesystem refuses locks on directories (some NFS setups)
    the body runs unlocked."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError:
            pass  # no directory locks here: the readers' size and checksum checks still catch a mixed pair
        yield
    finally:
        os.close(fd)  # closing releases the lock
