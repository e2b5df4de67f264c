"""IDX files (the MNIST / Fashion-MNIST format, optionally gzipped) as a source of the writer.

E.g. the files Debian's ``dataset-fashion-mnist`` installs under
``/usr/share/datasets/fashion-mnist/``. The images file is decompressed once to a temporary raw
file and memory-mapped, so memory stays flat. :class:`IdxSource` answers the writer as
:class:`~eigenmap.data.sources.ImageFiles` does.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .sources import SourceError

__all__ = ["IdxSource", "is_idx", "open_idx", "FASHION_MNIST_LABELS"]

FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _read_idx_header(fp) -> tuple[int, tuple[int, ...]]:
    """(dtype code, dims) of an IDX stream; raises SourceError on a bad magic number."""
    magic = fp.read(4)
    if len(magic) != 4 or magic[0] != 0 or magic[1] != 0:
        raise SourceError("not an IDX file (bad magic number)")
    dtype_code, ndim = magic[2], magic[3]
    dims = struct.unpack(">" + "I" * ndim, fp.read(4 * ndim))
    return dtype_code, dims


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


@dataclass
class IdxSource:
    """IDX image and label files (MNIST, Fashion-MNIST); images are 8-bit greyscale.

    The images are decompressed to ``raw_path`` (a temporary file the writer removes) and read
    through a memory map, so nothing grows with the dataset in RAM.

    Attributes:
        images_path / labels_path: the IDX files.
        classes: ``"0".."9"`` (zero-padded past 10 classes so that sorted order is label order).
        label_names: human-readable names when the files are Fashion-MNIST, else None.
    """

    images_path: Path
    labels_path: Path
    raw_path: Path
    num_items: int
    height: int
    width: int
    labels: np.ndarray
    classes: list[str]
    label_names: Optional[list[str]] = None
    kind: str = "idx"
    _images: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.num_items

    @property
    def image_bytes(self) -> int:
        """The raw RGB size of every image (they are all ``height x width``)."""
        return self.height * self.width * 3

    def _array(self) -> np.ndarray:
        if self._images is None:
            self._images = np.memmap(
                self.raw_path, dtype=np.uint8, mode="r", shape=(self.num_items, self.height, self.width)
            )
        return self._images

    def describe(self, index: int) -> str:
        return f"{self.images_path}[{index}]"

    def read(self, index: int) -> tuple[Optional[str], Optional[np.ndarray]]:
        return None, self.load(index)  # fixed-size arrays: nothing can be broken per item

    def load(self, index: int) -> np.ndarray:
        grey = np.asarray(self._array()[index])
        return np.repeat(grey[..., None], 3, axis=2)

    def skipped(self, bad: list[tuple[int, str]]) -> list[dict]:
        """The manifest's ``skipped`` (``bad`` is empty: every item is a whole array row)."""
        return [{"path": self.describe(i), "reason": reason} for i, reason in bad]

    def manifest_keys(self, written: np.ndarray) -> dict:
        return {}

    def close(self) -> None:
        self._images = None
        try:
            os.unlink(self.raw_path)
        except FileNotFoundError:
            pass

    def __getstate__(self) -> dict:
        # the memory map is reopened in each process rather than pickled
        state = dict(self.__dict__)
        state["_images"] = None
        return state


def _idx_pair(src: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files that ``src`` names: a file, or a folder plus a split."""
    if src.is_file():
        images = src
        name = src.name
        if "images-idx3" not in name:
            raise SourceError(f"'{src}' is a file but not an IDX images file (*-images-idx3-ubyte[.gz])")
        labels = src.with_name(name.replace("images-idx3", "labels-idx1"))
        if not labels.is_file():
            raise SourceError(f"IDX labels file '{labels}' for '{src}' does not exist")
        return images, labels
    for suffix in ("", ".gz"):
        images = src / f"{split}-images-idx3-ubyte{suffix}"
        labels = src / f"{split}-labels-idx1-ubyte{suffix}"
        if images.is_file() and labels.is_file():
            return images, labels
    raise SourceError(f"no IDX files for split '{split}' in '{src}' (expected {split}-images-idx3-ubyte[.gz])")


def is_idx(src: Path) -> bool:
    """Whether ``src`` names IDX files: a file, or a folder holding an ``*-images-idx3-ubyte[.gz]``."""
    if src.is_file():
        return True
    return src.is_dir() and any(p.name.endswith(("-images-idx3-ubyte", "-images-idx3-ubyte.gz")) for p in src.iterdir())


def open_idx(src: Path, split: str, scratch_dir: Path) -> IdxSource:
    """The IDX pair ``src`` names (a folder plus ``split``, or the images file), its images
    decompressed into ``scratch_dir`` (removed by :meth:`IdxSource.close`)."""
    images_path, labels_path = _idx_pair(src, split)
    try:
        with _open_maybe_gzip(labels_path) as f:
            code, dims = _read_idx_header(f)
            if code != 0x08 or len(dims) != 1:
                raise SourceError(f"'{labels_path}' is not a uint8 label vector (IDX type {code:#x}, dims {dims})")
            labels = np.frombuffer(f.read(dims[0]), dtype=np.uint8).astype(np.int64)
        if len(labels) != dims[0]:
            raise SourceError(f"'{labels_path}' is truncated: {len(labels)} of {dims[0]} labels")
        raw_fd, raw_name = tempfile.mkstemp(prefix=".idx-images-", dir=scratch_dir)
        with _open_maybe_gzip(images_path) as f, os.fdopen(raw_fd, "wb") as out:
            code, dims = _read_idx_header(f)
            if code != 0x08 or len(dims) != 3:
                raise SourceError(f"'{images_path}' is not uint8 N x H x W images (IDX type {code:#x}, dims {dims})")
            shutil.copyfileobj(f, out, length=1 << 20)  # streams; never holds the file
            written = out.tell()
    except (OSError, EOFError, struct.error) as e:
        raise SourceError(f"cannot read IDX files '{images_path}', '{labels_path}': {e}") from None
    n, h, w = dims
    if written < n * h * w:
        os.unlink(raw_name)
        raise SourceError(f"'{images_path}' is truncated: {written} of {n * h * w} pixel bytes")
    if n != len(labels):
        os.unlink(raw_name)
        raise SourceError(f"'{images_path}' has {n} images but '{labels_path}' has {len(labels)} labels")
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    width = len(str(max(num_classes - 1, 0)))
    classes = [str(i).zfill(width) for i in range(num_classes)]
    names = list(FASHION_MNIST_LABELS) if "fashion" in str(images_path).lower() and num_classes == 10 else None
    return IdxSource(images_path, labels_path, Path(raw_name), n, h, w, labels, classes, names)
