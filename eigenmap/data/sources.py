"""Where images come from: ImageFolder trees and IDX arrays, enumerated lazily, and sanitised.

Two kinds of source feed the writer:

- an **ImageFolder tree** (``SRC/<class>/.../<file>``, the ImageNet layout). Every regular
  file under a class folder is a candidate, whatever its extension, so that a stray ``.txt`` or
  a broken link is *listed* as skipped rather than silently ignored; files directly under
  ``SRC`` are listed as skipped too ("not in a class folder").
- **IDX files** (the MNIST / Fashion-MNIST format, optionally gzipped), e.g. the ones Debian's
  ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist/``. The images
  file is decompressed once to a temporary raw file and memory-mapped, so memory stays flat.

A source holds only paths (or a memory map) and labels, never decoded images, so it can be
handed to forked writer processes cheaply. :func:`load_rgb` turns any supported file into an
``H x W x 3`` ``uint8`` RGB array; it is also the loader of the torchvision twin, so both
pipelines see identical pixels before cropping.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = [
    "SourceError",
    "ImageFolderSource",
    "IdxSource",
    "open_source",
    "load_rgb",
    "check_image",
    "decode_image",
    "FASHION_MNIST_LABELS",
    "TRAIN_FOLDER_NAMES",
    "VAL_FOLDER_NAMES",
    "split_folders",
]

logger = logging.getLogger(__name__)

# FFCV stores width and height as uint16.
MAX_SIDE_PX = 65535

FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


# Folder names (lower case) that hold a dataset's splits, each split an ImageFolder tree: as class
# names they would label images by split. The validation names are in order of preference.
TRAIN_FOLDER_NAMES = ("train", "training")
VAL_FOLDER_NAMES = ("val", "valid", "validation", "test")


class SourceError(ValueError):
    """The source is missing, empty, or not a layout the writer understands."""


def split_folders(root: Union[str, os.PathLike]) -> tuple[Optional[Path], Optional[Path]]:
    """The training and validation folders of a dataset tree that keeps its splits in
    subfolders, matched without regard to case: ``train/`` (or ``training/``) and the first of
    ``val/``, ``valid/``, ``validation/``, ``test/`` present.

    Returns:
        ``(train, val)``; ``(train, None)`` when there is no validation folder; ``(None, None)``
        when ``root``'s subfolders are its classes.

    Raises:
        SourceError: ``root`` has a validation folder but no training folder.
    """
    root = Path(root)
    folders = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    train = next((folders[n] for n in TRAIN_FOLDER_NAMES if n in folders), None)
    val = next((folders[n] for n in VAL_FOLDER_NAMES if n in folders), None)
    if val is not None and train is None:
        raise SourceError(f"'{root}' has {val.name}/ but no train/ beside it; accepted: train/ with one of "
                          f"{', '.join(n + '/' for n in VAL_FOLDER_NAMES)} (class folders in each), train/ alone, "
                          "or a folder of class folders (the last two split by a holdout)")
    return train, val


# --------------------------------------------------------------------------------------------
# Sanitising one image
# --------------------------------------------------------------------------------------------


def _to_rgb_array(img) -> np.ndarray:
    """A PIL image of any mode as an ``H x W x 3`` uint8 RGB array.

    Alpha (RGBA, LA, palette with transparency) is composited over white, because transparent
    pixels often hold arbitrary colours that a viewer never shows. 16-bit greyscale is scaled
    from 0..65535 to 0..255 (``convert('RGB')`` would clip it to white). 32-bit integer greyscale
    (mode ``I``, which does not say its range) is taken as 0..255 when its maximum is at most 255
    (8-bit values saved from an integer array), else as 0..65535; float images are taken as 0..1
    when their maximum is at most 1, else as 0..255.
    """
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode != "I" or (arr.size and arr.max() > 255):  # at most 255 in 16 bits would be black
            arr = arr / 257.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"could not convert mode {mode} to RGB")
    return np.ascontiguousarray(arr)


def load_rgb(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode an image file to RGB.

    Args:
        path: any image format Pillow reads (JPEG, PNG, WebP, TIFF, BMP, GIF: first frame).

    Returns:
        ``uint8`` array of shape ``[H, W, 3]``. EXIF orientation is not applied (as with
        torchvision's ImageFolder loader and ImageNet practice).

    Raises:
        OSError, ValueError, PIL.UnidentifiedImageError: the file is unreadable, truncated,
        corrupt or not an image. :func:`check_image` turns these into reasons.
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decodes fully: truncated or corrupt data raises here, not later
        return _to_rgb_array(img)


def decode_image(path: Union[str, os.PathLike]) -> tuple[Optional[str], Optional[np.ndarray]]:
    """Decode a file once and decide whether it can go into the dataset.

    Returns:
        ``(reason, image)``: ``(None, [H, W, 3] uint8 RGB array)`` for a good image (converted
        as :func:`load_rgb` does), else ``(short human-readable reason, None)``, e.g.
        ``"empty file (0 bytes)"``, ``"truncated or corrupt: ..."``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        st = os.stat(path)  # follows links: a dangling link fails here
    except OSError as e:
        return f"unreadable: {e.strerror or e}", None
    if not stat.S_ISREG(st.st_mode):
        return "unreadable: not a regular file", None
    if st.st_size == 0:
        return "empty file (0 bytes)", None
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
            if width == 0 or height == 0:
                return f"image has no pixels ({width}x{height})", None
            if max(width, height) > MAX_SIDE_PX:
                return f"side longer than {MAX_SIDE_PX} px ({width}x{height}); FFCV cannot store it", None
            return None, _to_rgb_array(img)
    except UnidentifiedImageError:
        return "not an image (unrecognised format)", None
    except Image.DecompressionBombError as e:
        return f"too large to decode safely: {e}", None
    except PermissionError as e:
        return f"unreadable: {e.strerror or e}", None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        # PIL reports truncation as OSError("image file is truncated ...") and bad headers as
        # SyntaxError/ValueError; all mean the bytes cannot be trusted.
        return f"truncated or corrupt: {e}", None
    except MemoryError:
        return "too large to decode in memory", None


def check_image(path: Union[str, os.PathLike]) -> tuple[Optional[str], int, int]:
    """Decide whether a file can go into the dataset, by decoding it fully (:func:`decode_image`).

    Returns:
        ``(reason, width, height)``: ``reason`` is None for a good image, else a short
        human-readable reason; width and height are 0 for a bad file.
    """
    reason, image = decode_image(path)
    if image is None:
        return reason, 0, 0
    return None, image.shape[1], image.shape[0]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass
class ImageFolderSource:
    """Class folders of image files, enumerated once into compact arrays.

    Attributes:
        root: the ImageFolder root.
        classes: sorted class-folder names; the index in this list is the label.
        rel_paths: ``[N]`` fixed-width bytes, each file's path relative to ``root``
            (sorted by class, then path), so forked workers share it without copying.
        labels: ``[N]`` int64.
        stray_files: files directly under ``root`` (no class), to be listed as skipped.
    """

    root: Path
    classes: list[str]
    rel_paths: np.ndarray
    labels: np.ndarray
    stray_files: list[str] = field(default_factory=list)
    kind: str = "imagefolder"

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, index: int) -> str:
        """The path of item ``index`` as recorded in the manifest."""
        return str(self.root / self.rel_paths[index].decode("utf-8", "surrogateescape"))

    def check(self, index: int) -> tuple[Optional[str], int, int]:
        return check_image(self.describe(index))

    def read(self, index: int) -> tuple[Optional[str], Optional[np.ndarray]]:
        """``(None, image)`` or ``(reason, None)``: item ``index`` decoded once (:func:`decode_image`)."""
        return decode_image(self.describe(index))

    def load(self, index: int) -> np.ndarray:
        return load_rgb(self.describe(index))


def _has_subfolder(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_dir() for e in entries)


def _scan_image_folder(root: Path) -> ImageFolderSource:
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    classes, stray = [], []
    for e in entries:
        if e.is_dir(follow_symlinks=True):
            classes.append(e.name)
        else:
            stray.append(str(root / e.name))
    if not classes:
        raise SourceError(
            f"source '{root}' has no class folders; expected an ImageFolder tree "
            f"(SRC/<class>/<image files>) or Fashion-MNIST IDX files"
        )
    if {n.lower() for n in classes} <= {*TRAIN_FOLDER_NAMES, *VAL_FOLDER_NAMES} and any(
            _has_subfolder(root / cls) for cls in classes):
        example = next((c for c in classes if c.lower() in TRAIN_FOLDER_NAMES), classes[0])
        raise SourceError(
            f"source '{root}' holds split folders ({', '.join(c + '/' for c in classes)}) of class folders, not "
            f"class folders: its images would be labelled by split; pass one split as SRC, e.g. "
            f"'{root / example}'"
        )
    rel: list[bytes] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = []
        for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
            dirnames.sort()
            for name in filenames:
                files.append(os.path.relpath(os.path.join(dirpath, name), root))
        files.sort()
        rel.extend(f.encode("utf-8", "surrogateescape") for f in files)
        labels.extend([label] * len(files))
    if not rel:
        raise SourceError(f"source '{root}' has class folders ({', '.join(classes[:5])}...) but no files in them")
    return ImageFolderSource(
        root=root,
        classes=classes,
        rel_paths=np.array(rel, dtype=bytes),
        labels=np.array(labels, dtype=np.int64),
        stray_files=stray,
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
    stray_files: list[str] = field(default_factory=list)
    _images: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.num_items

    def _array(self) -> np.ndarray:
        if self._images is None:
            self._images = np.memmap(
                self.raw_path, dtype=np.uint8, mode="r", shape=(self.num_items, self.height, self.width)
            )
        return self._images

    def describe(self, index: int) -> str:
        return f"{self.images_path}[{index}]"

    def check(self, index: int) -> tuple[Optional[str], int, int]:
        return None, self.width, self.height

    def read(self, index: int) -> tuple[Optional[str], Optional[np.ndarray]]:
        return None, self.load(index)  # fixed-size arrays: nothing can be broken per item

    def load(self, index: int) -> np.ndarray:
        grey = np.asarray(self._array()[index])
        return np.repeat(grey[..., None], 3, axis=2)

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


def _is_idx_folder(src: Path) -> bool:
    return src.is_dir() and any(p.name.endswith(("-images-idx3-ubyte", "-images-idx3-ubyte.gz")) for p in src.iterdir())


def _open_idx(src: Path, split: str, scratch_dir: Path) -> IdxSource:
    images_path, labels_path = _idx_pair(src, split)
    try:
        with _open_maybe_gzip(labels_path) as f:
            code, dims = _read_idx_header(f)
            if code != 0x08 or len(dims) != 1:
                raise SourceError(f"'{labels_path}' is not a uint8 label vector (IDX type {code:#x}, dims {dims})")
            labels = np.frombuffer(f.read(dims[0]), dtype=np.uint8).astype(np.int64)
        if len(labels) != dims[0]:
            raise SourceError(f"'{labels_path}' is truncated: {len(labels)} of {dims[0]} labels")
        raw_fd, raw_name = _mkstemp(scratch_dir, ".idx-images-")
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


def _mkstemp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=prefix, dir=directory)


def open_source(src: Union[str, os.PathLike], *, split: str = "train",
                scratch_dir: Optional[Union[str, os.PathLike]] = None) -> Union[ImageFolderSource, IdxSource]:
    """Open an ImageFolder tree, IDX files, or a list file.

    Args:
        src: an ImageFolder root; a folder holding ``<split>-images-idx3-ubyte[.gz]`` and its
            labels file; an ``*-images-idx3-ubyte[.gz]`` file itself; or a spec that opens
            itself, such as :class:`eigenmap.data.list_source.ListSpec` (an image list file).
        split: which IDX pair to take from a folder (``train`` or ``t10k``); ignored otherwise.
        scratch_dir: where an IDX source decompresses its images (default: beside ``src``'s
            output, passed by the writer); the caller closes the source to remove it.

    Raises:
        SourceError: missing, empty, or unrecognised source, with the path and what is accepted.
    """
    if hasattr(src, "open_source"):  # e.g. a ListSpec; that module imports this one, so no import here
        return src.open_source()
    path = Path(src)
    if not path.exists():
        raise SourceError(f"source '{path}' does not exist (pass an ImageFolder root or Fashion-MNIST IDX files)")
    scratch = Path(scratch_dir) if scratch_dir is not None else Path.cwd()
    if path.is_file() or _is_idx_folder(path):
        return _open_idx(path, split, scratch)
    if not path.is_dir():
        raise SourceError(f"source '{path}' is neither a folder nor an IDX file")
    if not any(True for _ in os.scandir(path)):
        raise SourceError(f"source '{path}' is empty; expected class folders of images (SRC/<class>/<files>)")
    return _scan_image_folder(path)
