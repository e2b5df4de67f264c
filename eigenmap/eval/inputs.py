"""The sets an evaluation reads, described and checked before any array is made.

A set is given as one of three things:

- a ``.beton`` written by ``eigenmap prepare``: its arrays are extracted through a run's model
  (once: cached in ``RUN/eval/features/<name>/`` and reused while the weights and the file's
  contents are unchanged);
- a feature folder written by ``eigenmap extract`` (``features.json`` beside the arrays);
- a folder of anyone's arrays: ``codes.npy`` and/or ``features.npy`` ([N, d] float16/32/64)
  and ``labels.npy`` ([N] integers, or [N, C] 0/1 flags of a multi-label set), written by any
  tool, with no sidecar.

:func:`describe` reads only a manifest, a sidecar or array headers (plus one pass over an arrays
folder for its checks and identity), so :func:`check_pair` can refuse a wrong pair before hours
of extraction. A set's identity is its content: the ``.beton``'s sha256 (from its manifest), the
dataset sha256 a feature folder was extracted from, or a hash of an arrays folder's arrays; two
roles given the same content (one file, or a byte copy under another name) are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from eigenmap.data.manifest import ManifestError, read_manifest
from eigenmap.eval.features import (CODES, FEATURES, LABELS, SIDECAR, FeatureError, FeatureSet, feature_folder,
                                    load_features, matches)

__all__ = ["EvalInput", "EvalInputError", "describe", "check_pair", "require_arrays", "load_arrays",
           "Extractor", "ARRAY_NAMES"]

log = logging.getLogger(__name__)

ARRAY_NAMES = {"features": FEATURES, "codes": CODES}
_FLOAT_DTYPES = ("float16", "float32", "float64")
_HASHED_ROWS = 4096  # rows of each array an arrays folder's identity hashes, evenly spaced
_SCAN_BYTES = 256 << 20  # bytes read at once by the finiteness scan

# (data .beton, feature folder) -> the arrays of that file through a run's model, written there
Extractor = Callable[[Path, Path], FeatureSet]

ACCEPTED = ("a .beton written by `eigenmap prepare`, a feature folder written by `eigenmap extract`, or a folder "
            "holding codes.npy and/or features.npy ([N, d] floats) with labels.npy ([N] integers or [N, C] 0/1)")


class EvalInputError(ValueError):
    """An evaluation set is missing, malformed, or does not fit the set it is paired with."""


@dataclass(frozen=True)
class EvalInput:
    """One set as given on the command line, checked but not read.

    ``kind``: "beton", "features" (an ``eigenmap extract`` folder) or "arrays" (anyone's).
    ``identity``: its content id. ``classes``: class names (label i is ``classes[i]``), None
    when the set does not name them. ``label_kind``: "single" ([N] labels) or "multi" ([N, C]
    flags); ``num_labels``: C (the classes of a single-label set, the flags of a multi-label
    one). ``widths``: the arrays it holds and their widths (a ``.beton`` holds none yet).
    """

    role: str
    path: Path
    kind: str
    identity: str
    num_images: int
    classes: Optional[tuple[str, ...]]
    label_kind: str
    num_labels: int
    widths: dict = field(default_factory=dict)
    source: str = ""

    @property
    def name(self) -> str:
        """A short name: the file's stem or the folder's name (``train`` for ``train.beton``)."""
        return self.path.name.removesuffix(".beton")

    def to_dict(self) -> dict:
        """What the set is, for a report: path, kind, content id, size, labels, where it came from."""
        return {"path": str(self.path.resolve()), "kind": self.kind, "id": self.identity,
                "num_images": self.num_images, "label_kind": self.label_kind, "num_labels": self.num_labels,
                "source": self.source}


def describe(path: Path, role: str) -> EvalInput:
    """Check ``path`` as an evaluation set and say what it is, reading no image.

    Raises:
        EvalInputError: it does not exist, or is none of the accepted kinds, or its files
            disagree (the message names the file and what is accepted).
    """
    path = Path(path)
    if (path / SIDECAR).is_file():
        return _describe_feature_folder(path, role)
    if path.is_dir():
        return _describe_arrays(path, role)
    if path.is_file():
        return _describe_beton(path, role)
    raise EvalInputError(f"{role} '{path}' does not exist; accepted: {ACCEPTED}")


def check_pair(first: EvalInput, second: EvalInput, consequence: str) -> int:
    """Refuse two sets that cannot be evaluated against each other; return their class count.

    Args:
        first, second: e.g. the training and validation sets, or the database and queries.
        consequence: what scoring a set against itself would do (said when they are one set).

    Raises:
        EvalInputError: the same content in both roles; different label kinds or flag counts;
            class lists that differ, so label i would not mean one class in both.
    """
    roles = f"{first.role} '{first.path}' and {second.role} '{second.path}'"
    if first.identity == second.identity:
        raise EvalInputError(f"{first.role} and {second.role} are the same images ({roles} have the same contents, "
                             f"{first.identity[:23]}...): {consequence}; accepted: {second.role} held out from "
                             f"{first.role} (e.g. val/ against train/)")
    if first.label_kind != second.label_kind:
        raise EvalInputError(f"{roles} hold different label kinds ({first.label_kind}-label and "
                             f"{second.label_kind}-label); accepted: two sets labelled the same way")
    if first.classes is not None and second.classes is not None and first.classes != second.classes:
        a, b = first.classes, second.classes
        missing = sorted(set(a) ^ set(b))[:5]
        raise EvalInputError(f"{first.role} and {second.role} label different class lists ({len(a)} vs {len(b)} "
                             "classes" + (f"; in one only: {', '.join(missing)}" if missing else "; in another order")
                             + "); accepted: two splits of one dataset, written from folders with the same class "
                             "folders (an empty class folder keeps its label)")
    if first.label_kind == "multi" and first.num_labels != second.num_labels:
        raise EvalInputError(f"{roles} have {first.num_labels} and {second.num_labels} label flags per image; "
                             "accepted: two splits of one multi-label dataset (the same C)")
    return max(first.num_labels, second.num_labels)


def require_arrays(inp: EvalInput, *names: str) -> None:
    """Refuse a folder that lacks an array an evaluation needs (a ``.beton`` gets them all).

    Raises:
        EvalInputError: naming the missing file and the folder.
    """
    if inp.kind == "beton":
        return
    missing = [ARRAY_NAMES[n] for n in names if n not in inp.widths]
    if missing:
        raise EvalInputError(f"{inp.role} '{inp.path}' has no {' or '.join(missing)}; accepted: a folder holding "
                             f"{', '.join(ARRAY_NAMES[n] for n in names)} with labels.npy, or a .beton and a RUN")


def load_arrays(inp: EvalInput, *, run_dir: Optional[Path] = None, weights: Optional[Path] = None,
                scale_by_eigenvalue: bool = False, resolution: Optional[int] = None,
                extract: Optional[Extractor] = None) -> FeatureSet:
    """The arrays of a described set: read from its folder, or (a ``.beton``) the run's cached
    arrays of that file when they match, else extracted with ``extract``.

    Args:
        run_dir, weights, resolution: the run a ``.beton`` goes through (its weights file and
            ``data.resolution``), to find and check its cache.
        scale_by_eigenvalue: the codes asked for (cached arrays must have been made so).
        extract: ``(data, folder) -> FeatureSet``, run when nothing cached matches.
    """
    if inp.kind == "features":
        return load_features(inp.path)
    if inp.kind == "arrays":
        return _load_arrays_folder(inp)
    if run_dir is None or extract is None:
        raise EvalInputError(f"{inp.role} '{inp.path}' is a dataset file: pass the RUN whose encoder should read it")
    folder = feature_folder(run_dir, inp.path, scale_by_eigenvalue=scale_by_eigenvalue)
    if (folder / SIDECAR).is_file():
        try:
            cached = load_features(folder)
        except FeatureError:
            cached = None
        if cached is not None and matches(cached.meta, data_path=inp.path.resolve(), weights=weights,
                                          scale_by_eigenvalue=scale_by_eigenvalue, resolution=resolution):
            log.info("reusing the arrays of %s in %s (same weights, same file contents)", inp.path.name, folder)
            return cached
    return extract(inp.path, folder)


# ------------------------------------------------------------------------------------------
# The three kinds
# ------------------------------------------------------------------------------------------


def _describe_beton(path: Path, role: str) -> EvalInput:
    try:
        manifest = read_manifest(path)
    except ManifestError as e:
        raise EvalInputError(f"{role} '{path}': {e}; accepted: {ACCEPTED}") from None
    digest = manifest.get("sha256")
    if not digest:
        raise EvalInputError(f"{role} '{path}': its manifest records no sha256 (the contents' id); write it again "
                             f"with `eigenmap prepare`")
    kind = manifest.get("label_kind", "single")
    classes = tuple(manifest["classes"])
    return EvalInput(role, path, "beton", f"sha256:{digest}", int(manifest["num_images"]), classes, kind,
                     int(manifest.get("num_labels") or len(classes)),
                     source=f"{manifest.get('source_kind', 'images')} {manifest.get('source', '')}".strip())


def _describe_feature_folder(path: Path, role: str) -> EvalInput:
    try:
        arrays = load_features(path)
    except FeatureError as e:
        raise EvalInputError(f"{role}: {e}") from None
    meta, dataset = arrays.meta, arrays.meta["dataset"]
    labels = arrays.labels
    kind = "multi" if labels.ndim == 2 else "single"
    classes = tuple(dataset["classes"]) if dataset.get("classes") is not None else None
    if not dataset.get("sha256"):  # the images' identity: the dataset file they came from
        raise EvalInputError(f"{role} '{path}': {SIDECAR} records no sha256 of the dataset its arrays came from; "
                             "extract them again with `eigenmap extract`")
    identity = f"sha256:{dataset['sha256']}"
    widths = {name: int(getattr(arrays, name).shape[1]) for name in ARRAY_NAMES if getattr(arrays, name) is not None}
    return EvalInput(role, path, "features", identity, int(len(labels)), classes, kind,
                     int(labels.shape[1]) if kind == "multi" else len(classes or ()) or _label_count(labels),
                     widths, f"`eigenmap extract` of {dataset.get('path')} through {meta.get('weights', {}).get('path')} "
                             f"(step {meta.get('step')})")


def _describe_arrays(path: Path, role: str) -> EvalInput:
    present = {name: path / file for name, file in ARRAY_NAMES.items() if (path / file).is_file()}
    if not present or not (path / LABELS).is_file():
        have = sorted(p.name for p in path.iterdir())[:8]
        raise EvalInputError(f"{role} '{path}' is a folder without {SIDECAR}, codes.npy/features.npy or labels.npy "
                             f"(it holds: {', '.join(have) or 'nothing'}); accepted: {ACCEPTED}")
    labels = _open(path / LABELS, role)
    n = _check_labels(labels, path / LABELS, role)
    widths = {}
    for name, file in present.items():
        array = _open(file, role)
        if array.ndim != 2 or array.dtype.name not in _FLOAT_DTYPES:
            raise EvalInputError(f"{role} '{file}' is {array.dtype.name} of shape {list(array.shape)}; accepted: "
                                 f"[N, d] {', '.join(_FLOAT_DTYPES)}")
        if array.shape[0] != n or array.shape[1] == 0:
            raise EvalInputError(f"{role} '{file}' has {array.shape[0]} rows of width {array.shape[1]} but "
                                 f"'{path / LABELS}' has {n} labels; accepted: one row of width >= 1 per label")
        _check_finite(array, file, role)
        widths[name] = int(array.shape[1])
    kind = "multi" if labels.ndim == 2 else "single"
    return EvalInput(role, path, "arrays", _arrays_identity(path), n, None, kind,
                     int(labels.shape[1]) if kind == "multi" else _label_count(labels), widths,
                     f"arrays in {path.resolve()} (written by another tool: no sidecar)")


def _load_arrays_folder(inp: EvalInput) -> FeatureSet:
    arrays = {name: np.load(inp.path / file, mmap_mode="r") if name in inp.widths else None
              for name, file in ARRAY_NAMES.items()}
    labels = np.load(inp.path / LABELS, mmap_mode="r")
    meta = {"format_version": 0, "source": inp.source,
            "dataset": {"path": str(inp.path.resolve()), "classes": None, "num_images": inp.num_images},
            "shapes": {name: list(a.shape) if a is not None else None for name, a in arrays.items()}
            | {"labels": list(labels.shape)}}
    return FeatureSet(inp.path, arrays["features"], arrays["codes"], labels, meta)


# ------------------------------------------------------------------------------------------
# Checks and identity of an arrays folder
# ------------------------------------------------------------------------------------------


def _open(file: Path, role: str) -> np.ndarray:
    try:
        return np.load(file, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise EvalInputError(f"{role} '{file}' is not a readable .npy array ({e}); accepted: a file written by "
                             "numpy.save") from None


def _check_labels(labels: np.ndarray, file: Path, role: str) -> int:
    """The row count of a [N] integer or [N, C] 0/1 label array, after checking it."""
    if labels.ndim == 1 and labels.dtype.kind in "iu":
        if len(labels) and int(labels.min()) < 0:
            raise EvalInputError(f"{role} '{file}' holds a negative label ({int(labels.min())}); accepted: class "
                                 "indices 0..C-1")
    elif labels.ndim == 2 and labels.dtype.kind in "iufb" and labels.shape[1] >= 1:
        flags = np.asarray(labels)
        if not np.isin(flags, (0, 1)).all():
            raise EvalInputError(f"{role} '{file}' is a [N, C] label array with values other than 0 and 1; "
                                 "accepted: 0/1 flags (1 = the image has that label)")
    else:
        raise EvalInputError(f"{role} '{file}' is {labels.dtype.name} of shape {list(labels.shape)}; accepted: [N] "
                             "integer class indices, or [N, C] 0/1 flags of a multi-label set")
    if len(labels) == 0:
        raise EvalInputError(f"{role} '{file}' holds no label; accepted: one label (row) per image")
    return int(len(labels))


def _check_finite(array: np.ndarray, file: Path, role: str) -> None:
    rows = max(1, _SCAN_BYTES // max(1, array.shape[1] * array.dtype.itemsize))
    for i0 in range(0, len(array), rows):
        bad = ~np.isfinite(np.asarray(array[i0:i0 + rows])).all(axis=1)
        if bad.any():
            first = i0 + int(np.argmax(bad))
            raise EvalInputError(f"{role} '{file}' row {first} holds NaN or inf ({int(bad.sum())} such rows from "
                                 f"row {i0} on); accepted: finite values in every row")


def _label_count(labels: np.ndarray) -> int:
    return int(np.max(labels)) + 1 if len(labels) else 0


def _arrays_identity(folder: Path) -> str:
    """A hash of a folder's arrays: each file's shape and dtype, its labels whole, and
    ``_HASHED_ROWS`` evenly spaced rows of every other array (a byte copy hashes the same; two
    different sets differ in those rows), read through memory maps."""
    digest = hashlib.blake2b(digest_size=20)
    for file in (LABELS, *ARRAY_NAMES.values()):
        if not (folder / file).is_file():
            continue
        array = np.load(folder / file, mmap_mode="r")
        digest.update(json.dumps([file, list(array.shape), array.dtype.str]).encode())
        rows = np.arange(len(array)) if file == LABELS else np.unique(
            np.linspace(0, len(array) - 1, num=min(_HASHED_ROWS, len(array))).astype(np.int64))
        digest.update(np.ascontiguousarray(array[rows]).tobytes())
    return f"arrays:{digest.hexdigest()}"
