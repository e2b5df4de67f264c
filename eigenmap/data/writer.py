"""ImageFolder / list file / IDX -> FFCV ``.beton`` plus its manifest, in parallel, with flat memory.

One pass over the source, spread over ``workers`` FFCV writer processes:

1. **write**: each process reads, decodes and checks each file once
   (:func:`~eigenmap.data.decode.decode_image`: zero bytes, truncated or corrupt, not an
   image, unreadable, odd modes converted to RGB) and encodes the good ones (re-encoded as
   JPEG, or raw pixels) into a temporary file beside ``OUT``, at the file's position. A bad
   file leaves its position empty and comes back with its reason, listed in the manifest.
2. **finalise**: FFCV's writer fixes the number of samples before it starts, so the empty
   positions are dropped when its tables are written: the metadata rows of the good images move
   up in order and the allocation table is renumbered. The file never has a hole.
3. **publish**: the file's size and SHA-256 (read back from the page cache while the kernel
   flushes the file to disk, the two overlapped) go into the manifest; the new file and
   manifest, both complete under temporary names and flushed to disk, replace the old pair by
   two renames (manifest, then file) under an exclusive lock of the folder, which readers take
   shared. The old ``OUT`` stays valid until then and is never deleted first; two ``prepare``
   runs racing to one ``OUT`` leave one's pair, not one's manifest beside the other's file. An
   interrupted run leaves no half ``OUT``.

The writer processes are FFCV 1.0.2's, forked in :mod:`eigenmap.data.ffcv_writer` (why: no
hang when one dies, one decode per file, flat memory); the source is a path array (or a
memory-mapped IDX file), so memory grows with the number of images only by bookkeeping of the
order of 100 bytes per file.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np

from eigenmap.durable import folder_lock, fsync_dir, fsync_file, sha256_of

from .ffcv_writer import WriterError, make_writer
from .idx import IdxSource, is_idx, open_idx
from .manifest import MANIFEST_VERSION, manifest_path, write_manifest
from .sources import ImageFiles, ListSpec, SourceError

__all__ = ["WriterError", "write_beton", "open_source", "WRITE_MODES"]

logger = logging.getLogger(__name__)

WRITE_MODES = ("jpg", "raw")
_MIN_PAGE_SIZE = 1 << 21  # FFCV's smallest; each writer process wastes up to a page at the end


def open_source(src: Union[str, os.PathLike, ListSpec], *, split: str = "train",
                scratch_dir: Optional[Union[str, os.PathLike]] = None) -> Union[ImageFiles, IdxSource]:
    """The source ``src`` names: a list file, IDX files, or an ImageFolder tree.

    Args:
        src: a :class:`~eigenmap.data.sources.ListSpec`; a folder holding
            ``<split>-images-idx3-ubyte[.gz]`` and its labels file, or an
            ``*-images-idx3-ubyte[.gz]`` file itself; or an ImageFolder root.
        split: which IDX pair to take from a folder (``train`` or ``t10k``); ignored otherwise.
        scratch_dir: where an IDX source decompresses its images (default: the working folder;
            the writer passes OUT's); the caller closes the source to remove it.

    Raises:
        SourceError: missing, empty, or unrecognised source, with the path and what is accepted.
    """
    if isinstance(src, ListSpec):
        return ImageFiles.from_list(src.path, root=src.root, num_labels=src.num_labels, class_names=src.class_names)
    path = Path(src)
    if not path.exists():
        raise SourceError(f"source '{path}' does not exist (pass an ImageFolder root or Fashion-MNIST IDX files)")
    if is_idx(path):
        return open_idx(path, split, Path(scratch_dir) if scratch_dir is not None else Path.cwd())
    return ImageFiles.from_folder(path)


def _first_page_size(source, max_resolution: Optional[int], write_mode: str) -> int:
    """The FFCV page size to write with, chosen before any image is decoded.

    A stored image must fit one page. Its raw size is bounded when the longest side is known
    (``max_resolution``, or the fixed size of IDX images). A JPEG is also guided by the largest
    source file (a quality-90 re-encoding of a photo is rarely larger than its source; the
    factor 2 of :func:`_page_size_for` covers the rest), which keeps pages small when the
    images are smaller than the bound. An image that still does not fit is reported by the
    writer processes and the file is written again with pages sized for it: a wrong guess
    costs time, never images.
    """
    if source.image_bytes is not None:  # every image the same size (IDX)
        return _page_size_for(source.image_bytes)
    bound = None if max_resolution is None else max_resolution * max_resolution * 3
    if bound is not None and (write_mode == "raw" or _page_size_for(bound) == _MIN_PAGE_SIZE):
        return _page_size_for(bound)
    if write_mode == "jpg":
        largest = source.largest_file_bytes()
        return _page_size_for(largest if bound is None else min(bound, largest))
    return _MIN_PAGE_SIZE


def _flush_and_hash(path: Path) -> str:
    """The file's SHA-256, read back from the page cache while the kernel writes it to disk;
    returns once both are done (the rename that publishes it must follow a complete fsync)."""
    errors: list[OSError] = []

    def flush() -> None:
        try:
            fsync_file(path)
        except OSError as e:
            errors.append(e)

    flusher = threading.Thread(target=flush, name="fsync", daemon=True)
    flusher.start()
    digest = sha256_of(path)
    flusher.join()
    if errors:
        raise errors[0]
    return digest


def _page_size_for(largest_bytes: int) -> int:
    # a sample must fit in one page; JPEG can exceed raw size for tiny or noisy images,
    # hence the factor 2 and the constant
    need = 2 * largest_bytes + (1 << 16)
    return max(_MIN_PAGE_SIZE, 1 << math.ceil(math.log2(need)))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _validate_args(max_resolution, jpeg_quality, workers, write_mode) -> None:
    if max_resolution is not None and not (8 <= max_resolution <= 65535):
        raise WriterError(f"--max-resolution {max_resolution} is out of range; accepted: 8 to 65535 (longest side, px)")
    if not (1 <= jpeg_quality <= 100):
        raise WriterError(f"--jpeg-quality {jpeg_quality} is out of range; accepted: 1 to 100")
    if workers < 1:
        raise WriterError(f"--workers {workers} is out of range; accepted: 1 or more")
    if write_mode not in WRITE_MODES:
        raise WriterError(f"--write-mode {write_mode!r} is not supported; accepted: {', '.join(WRITE_MODES)}")


def _publish(tmp_beton: Path, tmp_manifest: Path, out: Path, overwrite: bool) -> None:
    """Replace ``out`` and its manifest by the complete temporary pair, together."""
    with folder_lock(out.parent):
        if out.exists() and not overwrite:  # written by another prepare since this one started
            raise WriterError(f"output '{out}' was written by another process meanwhile; pass --overwrite to "
                              "replace it")
        os.replace(tmp_manifest, manifest_path(out))
        os.replace(tmp_beton, out)
        fsync_dir(out.parent)


def stored_side_for(resolution: int) -> int:
    """The longest side worth storing (``max_resolution``) for training at ``resolution`` px.

    RandomResizedCrop's smallest crop (8% of the area) spans about 0.28 of the image's side, so
    at 4x the output side even that crop still holds as many source pixels as it outputs: a
    larger stored image adds only decode time. Measured on 800 Imagenette images upscaled to
    500 x 375 JPEGs (``tools/bench_loader.py --data F --beton F.beton --batch-size 100``, 64 px,
    2 workers): the two-view loader gave 696 pairs/s stored full size and 1,817 at 256 px.

    Returns:
        ``max(256, 4 * resolution)``.
    """
    return max(256, 4 * resolution)


def _write_images(source, path: Path, fields: dict, page_size: int, workers: int) -> list[tuple[int, str]]:
    """Every item of ``source`` into the FFCV file ``path``, each decoded once; returns the bad
    ones, ``[(index, reason)]``. A page too small for some image (rare: only without a known
    bound on the stored size, see :func:`_first_page_size`) means one more pass with pages sized
    for the largest."""
    candidates = np.arange(len(source))
    writer = make_writer(str(path), fields, page_size, min(workers, len(candidates)))
    bad, too_large = writer.from_source(source, candidates)
    if too_large:
        page_size = _page_size_for(max(size for _, size in too_large))
        logger.warning("%d images do not fit %d MiB FFCV pages (e.g. %s); writing again with %d MiB pages",
                       len(too_large), writer.page_size >> 20, source.describe(too_large[0][0]), page_size >> 20)
        writer = make_writer(str(path), fields, page_size, min(workers, len(candidates)))
        bad, too_large = writer.from_source(source, candidates)
        assert not too_large, "a page sized for the largest image holds it"
    return bad


def _manifest(source, src: str, good_indices: np.ndarray, skipped: list[dict], stored: dict) -> dict:
    """The manifest of the written file (less its ``bytes`` and ``sha256``): classes and counts
    of the ``good_indices`` written, the ``skipped`` entries, how the images were ``stored``."""
    labels = np.asarray(source.labels)[good_indices]
    label_kind = "multi" if labels.ndim == 2 else "single"
    # multi-hot: images carrying each label
    counts = labels.sum(axis=0) if label_kind == "multi" else np.bincount(labels, minlength=len(source.classes))
    for cls, c in zip(source.classes, counts):
        if c == 0:
            logger.warning("class '%s' has no valid image; its label is kept so labels match folders", cls)
    return {
        "format_version": MANIFEST_VERSION,
        "source": src,
        "source_kind": source.kind,
        "classes": list(source.classes),
        "label_names": source.label_names,
        "counts": {c: int(k) for c, k in zip(source.classes, counts)},
        "label_kind": label_kind,
        "num_labels": len(source.classes),
        **source.manifest_keys(good_indices),
        "num_images": int(len(good_indices)),
        "skipped": skipped,
        **stored,
    }


def write_beton(
    src: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    max_resolution: Optional[int] = None,
    jpeg_quality: int = 90,
    workers: Optional[int] = None,
    write_mode: str = "jpg",
    overwrite: bool = False,
    split: str = "train",
) -> dict:
    """Write ``src`` to the FFCV file ``out`` and its manifest ``out + '.json'``.

    Args:
        src: an ImageFolder root, Fashion-MNIST/MNIST IDX files (a folder or the images file),
            or a :class:`~eigenmap.data.sources.ListSpec` (a list file): see :func:`open_source`.
        out: the ``.beton`` to create.
        max_resolution: shrink images whose longest side exceeds this (px); None keeps sizes.
        jpeg_quality: JPEG quality of the stored images (``write_mode='jpg'``).
        workers: writer processes (default: all CPUs).
        write_mode: ``jpg`` (compact; decoded by the loader) or ``raw`` (uint8 pixels; larger
            file, no decode cost: worth it for small images that fit in the page cache).
        overwrite: replace an existing ``out``.
        split: the IDX split (``train`` or ``t10k``) when ``src`` is a folder of IDX files.

    Returns:
        The manifest (also written next to ``out``).

    Raises:
        WriterError: bad argument, ``out`` exists without ``overwrite``, no valid image.
        SourceError: ``src`` missing, empty or unrecognised.
    """
    import torch

    threads = torch.get_num_threads()
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    torch.set_num_threads(threads)  # importing FFCV sets it to 1

    workers = workers if workers is not None else (os.cpu_count() or 1)
    _validate_args(max_resolution, jpeg_quality, workers, write_mode)
    out = Path(out).absolute()
    if out.is_dir():
        raise WriterError(f"output '{out}' is a folder; pass a file name such as {out / 'train.beton'}")
    if out.exists() and not overwrite:
        raise WriterError(f"output '{out}' exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    source = open_source(src, split=split, scratch_dir=out.parent)
    tmp_beton = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp_manifest = out.with_name(f".{manifest_path(out).name}.partial-{os.getpid()}")
    try:
        fields = {
            "image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality),
            # multi-hot rows [C] of 0/1 as uint8: C bytes a sample
            "label": (NDArrayField(np.dtype("uint8"), (source.labels.shape[1],)) if source.labels.ndim == 2
                      else IntField()),
        }
        t0 = time.perf_counter()
        bad = _write_images(source, tmp_beton, fields, _first_page_size(source, max_resolution, write_mode), workers)
        skipped = source.skipped(bad)
        good = np.ones(len(source), dtype=bool)
        good[[i for i, _ in bad]] = False
        good_indices = np.flatnonzero(good)
        logger.info("wrote %d images in %.1f s (%d files skipped)", len(good_indices), time.perf_counter() - t0,
                    len(skipped))
        if len(good_indices) == 0:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
            raise WriterError(f"source '{src}' has no valid image ({len(skipped)} files skipped: {reasons})")

        stored = {"max_resolution": max_resolution, "write_mode": write_mode,
                  "jpeg_quality": jpeg_quality if write_mode == "jpg" else None}
        manifest = _manifest(source, str(Path(src).absolute()), good_indices, skipped, stored)
        manifest.update(bytes=tmp_beton.stat().st_size, sha256=_flush_and_hash(tmp_beton))
        write_manifest(manifest, tmp_manifest)
        _publish(tmp_beton, tmp_manifest, out, overwrite)
        return manifest
    finally:
        tmp_manifest.unlink(missing_ok=True)
        if tmp_beton.exists():
            tmp_beton.unlink()
        source.close()
