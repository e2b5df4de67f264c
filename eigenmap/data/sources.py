"""Where images come from: labelled image files, from a folder tree or a list file.

:class:`ImageFiles` is the one image-file source, made by either constructor:

- :meth:`ImageFiles.from_folder`: an ImageFolder tree (``SRC/<class>/.../<file>``, the
  ImageNet layout). Every regular file under a class folder is a candidate, whatever its
  extension, so that a stray ``.txt`` or a broken link is *listed* as skipped rather than
  silently ignored; files directly under ``SRC`` are listed as skipped too ("not in a class
  folder").
- :meth:`ImageFiles.from_list`: a list file, the DeepHash / HashNet split format that the
  retrieval literature uses for COCO, NUS-WIDE, VOC2012 and MIRFlickr (``*_DB.txt``,
  ``*_Query.txt``, ``*_Train.txt``; also ``database.txt`` / ``test.txt``), one image a line::

      train2014/COCO_train2014_000000000009.jpg 0 0 1 0 ... 0      <- multi-label: C flags of 0/1
      n01440764/n01440764_10026.JPEG 0                             <- single-label: a class index

  Fields are separated by whitespace, so a path cannot contain any. A relative path is taken
  relative to the root (``--root``; by default the folder holding the list file), an absolute
  one as it is. Blank lines are ignored. The kind is read from the file: lines of one number
  are single-label (``C`` = the largest label + 1, or ``num_labels``), lines of several are
  multi-hot (``C`` = ``num_labels``, or the number of flags most lines carry). Lines that do
  not fit (another flag count, a flag other than 0/1, a label that is not a class index, no
  label) are not read: they are listed with their line numbers and reasons, and the writer adds
  the lines whose image is missing or unreadable. Class names: one a line in ``class_names``
  (C lines, in flag order), else the zero-padded indices ``"0".."C-1"`` (``"00".."79"`` for
  80), whose sorted order is the label order.

A source holds only paths and labels, never decoded images, so it can be handed to forked
writer processes cheaply; :mod:`eigenmap.data.decode` turns one file into pixels. The writer's
other source, IDX arrays, is :mod:`eigenmap.data.idx`; both answer the writer the same way
(``len``, ``labels``, ``classes``, ``describe(i)``, ``read(i)``, ``skipped(bad)``,
``manifest_keys(written)``, ``close()``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .decode import decode_image, load_rgb

__all__ = [
    "SourceError",
    "ImageFiles",
    "ListSpec",
    "TRAIN_FOLDER_NAMES",
    "VAL_FOLDER_NAMES",
    "split_folders",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

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
# Image files: a folder tree or a list file
# --------------------------------------------------------------------------------------------


@dataclass
class ImageFiles:
    """Labelled image files, enumerated once into compact arrays that forked writer processes
    share without copying. Made by :meth:`from_folder` (class folders) or :meth:`from_list`
    (a list file); nothing else differs.

    Attributes:
        root: where ``rel_paths`` start (the ImageFolder root; the list's root).
        rel_paths: ``[N]`` fixed-width bytes, each image's path as found (a folder's sorted by
            class, then path; a list's in line order, an absolute path kept as written).
        labels: ``[N]`` int64 class indices, or ``[N, C]`` uint8 0/1 rows (a multi-hot list).
        classes: the C class names; the index is the label (the flag's position).
        kind: ``"imagefolder"`` or ``"list"``, the manifest's ``source_kind``.
        line_numbers: ``[N]`` int64, each image's line in the list file (1-based); None for a
            folder.
        unread: entries listed as skipped without being opened: files directly under a
            folder's root (``{"path", "reason"}``), list lines that do not parse
            (``{"path", "line", "reason"}``).
    """

    root: Path
    rel_paths: np.ndarray
    labels: np.ndarray
    classes: list[str]
    kind: str
    line_numbers: Optional[np.ndarray] = None
    unread: list[dict] = field(default_factory=list)
    label_names = None  # names other than ``classes``: only IDX files carry them (Fashion-MNIST's)
    image_bytes = None  # the raw size of every image, when all are one size: not known for files

    @classmethod
    def from_folder(cls, root: PathLike) -> "ImageFiles":
        """The files of an ImageFolder tree: classes = the sorted names of ``root``'s folders.

        Raises:
            SourceError: not a folder, empty, no class folders, split folders (``train/``,
                ``val/``) of class folders, or class folders without files.
        """
        return _scan_folder(Path(root))

    @classmethod
    def from_list(cls, path: PathLike, *, root: Optional[PathLike] = None, num_labels: Optional[int] = None,
                  class_names: Optional[PathLike] = None) -> "ImageFiles":
        """The lines of a list file that parse (see the module docstring for the format; their
        images are checked by the writer).

        Args:
            path: the list file (UTF-8 text).
            root: where relative image paths start (default: the list file's folder).
            num_labels: C; by default the number of flags most lines carry (multi-hot) or the
                largest label + 1 (single-label), or the number of ``class_names``.
            class_names: a file of C names, one a line.

        Raises:
            SourceError: the list or root is missing, the list holds no line that parses, the
                class names disagree with ``num_labels``.
        """
        return _read_list(path, root, num_labels, class_names)

    def __len__(self) -> int:
        return len(self.rel_paths)

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    @property
    def label_kind(self) -> str:
        """``"single"`` (a class index per image) or ``"multi"`` (a 0/1 row of C flags)."""
        return "multi" if self.labels.ndim == 2 else "single"

    def describe(self, index: int) -> str:
        """The path of item ``index`` as recorded in the manifest."""
        return os.path.join(self.root, self.rel_paths[index].decode("utf-8", "surrogateescape"))

    def read(self, index: int) -> tuple[Optional[str], Optional[np.ndarray]]:
        """``(None, image)`` or ``(reason, None)``: item ``index`` decoded once (:func:`decode_image`)."""
        return decode_image(self.describe(index))

    def load(self, index: int) -> np.ndarray:
        return load_rgb(self.describe(index))

    def largest_file_bytes(self) -> int:
        """The size of the largest file (0 when none can be read): guides the writer's page size."""
        root, largest = os.fsencode(self.root), 0
        for rel in self.rel_paths:
            try:
                largest = max(largest, os.stat(os.path.join(root, rel)).st_size)
            except OSError:  # a broken file: the writer processes give its reason
                pass
        return largest

    def skipped(self, bad: list[tuple[int, str]]) -> list[dict]:
        """The manifest's ``skipped``: :attr:`unread` and the items the writer could not use.

        Args:
            bad: ``[(index, reason)]`` in index order.

        Returns:
            ``[{"path", "reason"}]`` (a folder: its stray files first), or for a list
            ``[{"path", "line", "reason"}]`` in line order.
        """
        if self.line_numbers is None:
            return self.unread + [{"path": self.describe(i), "reason": reason} for i, reason in bad]
        failed = [{"path": self.describe(i), "line": int(self.line_numbers[i]), "reason": reason} for i, reason in bad]
        return sorted(self.unread + failed, key=lambda entry: entry["line"])

    def manifest_keys(self, written: np.ndarray) -> dict:
        """A list's own manifest keys: ``list_root``, and for a multi-hot list
        ``num_without_labels`` (written images with no flag set: no query finds them relevant).

        Args:
            written: ``[n]`` indices of the items written.
        """
        if self.kind != "list":
            return {}
        keys = {"list_root": str(self.root)}
        if self.label_kind == "multi":
            keys["num_without_labels"] = int((self.labels[written].sum(axis=1) == 0).sum())
        return keys

    def close(self) -> None:
        """Nothing to release (an IDX source removes its scratch file)."""


def _has_subfolder(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_dir() for e in entries)


def _scan_folder(root: Path) -> ImageFiles:
    if not root.is_dir():
        raise SourceError(f"source '{root}' is not a folder; expected an ImageFolder tree (SRC/<class>/<image files>)")
    if not any(True for _ in os.scandir(root)):
        raise SourceError(f"source '{root}' is empty; expected class folders of images (SRC/<class>/<files>)")
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
    return ImageFiles(root=root, rel_paths=np.array(rel, dtype=bytes), labels=np.array(labels, dtype=np.int64),
                      classes=classes, kind="imagefolder",
                      unread=[{"path": path, "reason": "not in a class folder"} for path in stray])


@dataclass(frozen=True)
class ListSpec:
    """A list file to read and how: what ``eigenmap prepare --list`` hands the writer
    (the writer opens it with :meth:`ImageFiles.from_list`).

    Path-like (``os.fspath`` gives the list file), so the manifest records the list as its
    ``source``.

    Attributes:
        path: the list file.
        root: the folder relative image paths start from (default: the list file's folder).
        num_labels: C, when the list should not decide it: the flag count of a multi-hot list,
            or the class count of a single-label list.
        class_names: a text file of C class names, one a line, in flag (label) order.
    """

    path: PathLike
    root: Optional[PathLike] = None
    num_labels: Optional[int] = None
    class_names: Optional[PathLike] = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)


def _read_class_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"class names file '{path}' is unreadable: {e}") from None
    names = [n for n in names if n]
    if not names:
        raise SourceError(f"class names file '{path}' is empty; expected one class name a line, in flag order")
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise SourceError(f"class names file '{path}' names {repeated[0]!r} more than once; each class needs its own "
                          "name")
    return names


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _multi_hot(tokens: list[str], num_labels: int, why: str) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(row [C] uint8, None) or (None, the reason the tokens are not C flags of 0/1)."""
    # a word where the first flag should be: most likely the rest of a path that holds a space
    hint = "" if tokens[0].lstrip("-").isdigit() else " (a path with spaces? fields are separated by whitespace)"
    if len(tokens) != num_labels:
        return None, f"{len(tokens)} label flags, expected {num_labels} ({why}){hint}"
    joined = "".join(tokens)
    if len(joined) == num_labels and not joined.strip("01"):  # one character each, all 0/1
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8) - ord("0"), None
    position, token = next((j, t) for j, t in enumerate(tokens, 1) if t not in ("0", "1"))
    return None, f"flag {token!r} (the {_ordinal(position)}) is not 0 or 1{hint}"


def _class_index(tokens: list[str], num_labels: Optional[int]) -> tuple[Optional[int], Optional[str]]:
    """(label, None) or (None, the reason the tokens are not one class index)."""
    if len(tokens) != 1:
        return None, f"{len(tokens)} labels, expected 1 (the list is single-label: PATH LABEL on each line)"
    token = tokens[0]
    if not (token.isascii() and token.isdigit()):
        return None, f"label {token!r} is not a class index (an integer >= 0)"
    value = int(token)
    if num_labels is not None and value >= num_labels:
        return None, f"label {value} is not below the class count {num_labels}"
    return value, None


def _list_entries(list_path: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, label text)`` of each non-blank line. The label text stays one
    string: a token list per line would cost a Python object per flag (gigabytes for NUS-WIDE)."""
    entries: list[tuple[int, str, str]] = []
    try:
        with open(list_path, encoding="utf-8", errors="surrogateescape") as f:
            for number, line in enumerate(f, 1):
                parts = line.lstrip("\ufeff").split(maxsplit=1)
                if parts:
                    entries.append((number, parts[0], parts[1] if len(parts) > 1 else ""))
    except OSError as e:
        raise SourceError(f"list file '{list_path}' is unreadable: {e}") from None
    if not entries:
        raise SourceError(f"list file '{list_path}' has no lines; expected 'PATH FLAG_1 ... FLAG_C' or 'PATH LABEL'")
    return entries


def _read_list(path: PathLike, root: Optional[PathLike], num_labels: Optional[int],
               class_names: Optional[PathLike]) -> ImageFiles:
    """:meth:`ImageFiles.from_list`."""
    list_path = Path(path).absolute()
    if not list_path.is_file():
        raise SourceError(f"list file '{list_path}' does not exist; expected a text file of lines "
                          "'PATH FLAG_1 ... FLAG_C' (multi-hot 0/1) or 'PATH LABEL'")
    root_path = Path(root).absolute() if root is not None else list_path.parent
    if not root_path.is_dir():
        raise SourceError(f"--root '{root_path}' is not a folder; pass the folder the list's relative paths start from")
    if num_labels is not None and num_labels < 1:
        raise SourceError(f"--num-labels {num_labels} is out of range; accepted: 1 or more")
    names = _read_class_names(Path(class_names)) if class_names is not None else None
    if names is not None and num_labels is not None and len(names) != num_labels:
        raise SourceError(f"class names file '{class_names}' names {len(names)} classes but --num-labels is "
                          f"{num_labels}; give one name per label")

    entries = _list_entries(list_path)
    counts = Counter(len(rest.split()) for _, _, rest in entries)
    common = max(counts, key=lambda c: (counts[c], c))  # the count most lines carry
    expected = num_labels if num_labels is not None else (len(names) if names is not None else None)
    kind = "single" if common <= 1 else "multi"
    if kind == "multi" and expected is None:
        expected = common
        why = f"the count on {counts[common]} of {len(entries)} lines; set --num-labels to choose another"
    else:
        why = "--num-labels" if num_labels is not None else "the names in --class-names"

    good_paths, good_lines, good_labels, bad = [], [], [], []
    for number, rel, rest in entries:
        tokens = rest.split()
        if not tokens:
            label, reason = None, "no labels after the path (expected 'PATH FLAG_1 ... FLAG_C' or 'PATH LABEL')"
        elif kind == "multi":
            label, reason = _multi_hot(tokens, expected, why)
        else:
            label, reason = _class_index(tokens, expected)
        if reason is not None:
            bad.append({"path": os.path.join(root_path, rel), "line": number, "reason": reason})
            continue
        good_paths.append(rel.encode("utf-8", "surrogateescape"))
        good_lines.append(number)
        good_labels.append(label)
    if not good_paths:
        shown = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:3])
        raise SourceError(f"list file '{list_path}' has no usable line ({len(bad)} lines: {shown})")

    if kind == "multi":
        labels = np.stack(good_labels).astype(np.uint8)
    else:
        labels = np.array(good_labels, dtype=np.int64)
        if expected is None:
            expected = int(labels.max()) + 1
    if names is not None and len(names) != expected:
        raise SourceError(f"class names file '{class_names}' names {len(names)} classes but the list has "
                          f"{expected} labels ({'flags a line' if kind == 'multi' else 'largest label + 1'}); "
                          "give one name per label")
    width = len(str(expected - 1))
    classes = names if names is not None else [str(i).zfill(width) for i in range(expected)]
    if bad:
        logger.warning("%s: %d of %d lines not read (listed in the manifest), e.g. line %d: %s", list_path.name,
                       len(bad), len(entries), bad[0]["line"], bad[0]["reason"])
    return ImageFiles(root=root_path, rel_paths=np.array(good_paths, dtype=bytes), labels=labels,
                      classes=list(classes), kind="list", line_numbers=np.array(good_lines, dtype=np.int64),
                      unread=bad)
