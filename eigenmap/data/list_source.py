"""Image list files: one image a line, then its labels (the DeepHash / HashNet split format).

The splits the retrieval literature uses for COCO, NUS-WIDE, VOC2012 and MIRFlickr
(``*_DB.txt``, ``*_Query.txt``, ``*_Train.txt``; also ``database.txt`` / ``test.txt``) are
text files with one image a line::

    train2014/COCO_train2014_000000000009.jpg 0 0 1 0 ... 0      <- multi-label: C flags of 0/1
    n01440764/n01440764_10026.JPEG 0                             <- single-label: a class index

Fields are separated by whitespace, so a path cannot contain any. A relative path is taken
relative to the root (``--root``; by default the folder holding the list file), an absolute
one as it is. Blank lines are ignored.

The kind is read from the file: lines of one number are single-label (``C`` = the largest label
+ 1, or ``num_labels``), lines of several are multi-hot (``C`` = ``num_labels``, or the number
of flags most lines carry). Lines that do not fit (another flag count, a flag other than 0/1,
a label that is not a class index, no label) are not read: they are listed with their line
numbers and reasons, and the writer adds the lines whose image is missing or unreadable.

Class names: one a line in ``class_names`` (C lines, in flag order), else the zero-padded
indices ``"0".."C-1"`` (``"00".."79"`` for 80), whose sorted order is the label order.

This module plugs into :func:`eigenmap.data.sources.open_source` through
:meth:`ListSpec.open_source` (sources.py cannot import it: this module imports sources.py).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .sources import SourceError, check_image, decode_image, load_rgb

__all__ = ["ListSpec", "ListSource", "open_list"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ListSpec:
    """A list file to read and how: what ``eigenmap prepare --list`` hands the writer.

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

    def open_source(self) -> "ListSource":
        """The :class:`ListSource` of this list (what ``open_source`` calls)."""
        return open_list(self.path, root=self.root, num_labels=self.num_labels, class_names=self.class_names)


@dataclass
class ListSource:
    """The usable lines of a list file, as compact arrays a forked writer process shares.

    Attributes:
        list_path: the list file.
        root: where relative paths start.
        rel_paths: ``[N]`` fixed-width bytes, each usable line's path as written.
        line_numbers: ``[N]`` int64, each one's line in the file (1-based).
        labels: ``[N]`` int64 (single-label) or ``[N, C]`` uint8 0/1 (multi-hot).
        classes: the C class names; the index is the label (the flag's position).
        label_kind: ``"single"`` or ``"multi"``.
        bad_lines: ``[{"path", "line", "reason"}]``, the lines that could not be read.
    """

    list_path: Path
    root: Path
    rel_paths: np.ndarray
    line_numbers: np.ndarray
    labels: np.ndarray
    classes: list[str]
    label_kind: str
    bad_lines: list[dict] = field(default_factory=list)
    kind: str = "list"
    stray_files: list[str] = field(default_factory=list)  # the writer's name for files outside any class

    def __len__(self) -> int:
        return len(self.line_numbers)

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    def describe(self, index: int) -> str:
        """The image path of item ``index`` (absolute paths in the list are kept as they are)."""
        return os.path.join(self.root, self.rel_paths[index].decode("utf-8", "surrogateescape"))

    def check(self, index: int) -> tuple[Optional[str], int, int]:
        return check_image(self.describe(index))

    def read(self, index: int) -> tuple[Optional[str], Optional[np.ndarray]]:
        """``(None, image)`` or ``(reason, None)``: item ``index`` decoded once (:func:`decode_image`)."""
        return decode_image(self.describe(index))

    def load(self, index: int) -> np.ndarray:
        return load_rgb(self.describe(index))

    def with_line_numbers(self, good: np.ndarray, skipped: list[dict]) -> list[dict]:
        """Every line not written, in line order: the unreadable lines, then ``skipped`` (the
        writer's ``{"path", "reason"}`` for images that failed its check) given their lines.

        Args:
            good: ``[N]`` bool, the items that passed the check.
            skipped: one entry per failed item, in any order, named by :meth:`describe`.

        Returns:
            ``[{"path", "line", "reason"}]`` sorted by line.
        """
        lines: dict[str, list[int]] = {}
        for i in np.flatnonzero(~np.asarray(good)):
            lines.setdefault(self.describe(i), []).append(int(self.line_numbers[i]))
        numbered = []
        for entry in skipped:
            queue = lines.get(entry["path"])  # a path listed twice fails twice, in line order
            numbered.append({"path": entry["path"], "line": queue.pop(0) if queue else None,
                             "reason": entry["reason"]})
        return sorted(self.bad_lines + numbered, key=lambda e: (e["line"] is None, e["line"] or 0))

    def manifest_keys(self, written: np.ndarray) -> dict:
        """The list's own manifest keys: ``list_root``, and for a multi-hot list
        ``num_without_labels`` (written images with no flag set: no query finds them relevant).

        Args:
            written: ``[n]`` indices of the items written.
        """
        keys = {"list_root": str(self.root)}
        if self.label_kind == "multi":
            keys["num_without_labels"] = int((self.labels[written].sum(axis=1) == 0).sum())
        return keys


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


def open_list(path: PathLike, *, root: Optional[PathLike] = None, num_labels: Optional[int] = None,
              class_names: Optional[PathLike] = None) -> ListSource:
    """Read a list file (see the module docstring for the format).

    Args:
        path: the list file (UTF-8 text).
        root: where relative image paths start (default: the list file's folder).
        num_labels: C; by default the number of flags most lines carry (multi-hot) or the
            largest label + 1 (single-label), or the number of ``class_names``.
        class_names: a file of C names, one a line.

    Returns:
        A :class:`ListSource` of the lines that parse (their images are checked by the writer).

    Raises:
        SourceError: the list or root is missing, the list holds no line that parses, the class
            names disagree with ``num_labels``.
    """
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

    # pass 1: path and label text of each line; the label text stays one string (a token list
    # per line would cost a Python object per flag: gigabytes for NUS-WIDE)
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
    return ListSource(list_path=list_path, root=root_path, rel_paths=np.array(good_paths, dtype=bytes),
                      line_numbers=np.array(good_lines, dtype=np.int64), labels=labels, classes=list(classes),
                      label_kind=kind, bad_lines=bad)
