"""ImageFolder / IDX -> FFCV ``.beton`` plus its manifest, in parallel, with flat memory.

Two passes over the source, both spread over ``workers`` processes:

1. **check**: every file is decoded once (:func:`~eigenmap.data.sources.check_image`); bad
   files (zero bytes, truncated or corrupt, not an image, unreadable) get a reason and are
   listed in the manifest. Checking first means the FFCV file never has a hole: FFCV's writer
   fixes the number of samples before it starts.
2. **write**: FFCV's ``DatasetWriter`` encodes the good files (re-encoded as JPEG, or raw
   pixels) into a temporary file beside ``OUT``.
3. **publish**: the file's size and SHA-256 go into the manifest; the new file and manifest,
   both complete under temporary names and flushed to disk, replace the old pair by two
   renames (manifest, then file) under an exclusive lock of the folder, which readers take
   shared. The old ``OUT`` stays valid until then and is never deleted first; two ``prepare``
   runs racing to one ``OUT`` leave one's pair, not one's manifest beside the other's file. An
   interrupted run leaves no half ``OUT``.

Memory: the source is a path array (or a memory-mapped IDX file), work is handed out a few
chunks at a time, and each writer process holds one FFCV page, so memory grows with the number
of images only by bookkeeping of the order of 100 bytes per file (paths, FFCV's allocation
table): measured here, the peak stayed 90-130 MiB above the process's baseline from 1,000 to
60,000 images.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import threading
import time
from multiprocessing import Process, Queue, Value, shared_memory
from pathlib import Path
from typing import Optional, Union

import numpy as np

from eigenmap.durable import folder_lock, fsync_dir, fsync_file, sha256_of

from .list_source import ListSource
from .manifest import MANIFEST_VERSION, manifest_path, write_manifest
from .sources import IdxSource, open_source

__all__ = ["WriterError", "write_beton", "WRITE_MODES"]

logger = logging.getLogger(__name__)

WRITE_MODES = ("jpg", "raw")
_MIN_PAGE_SIZE = 1 << 21  # FFCV's smallest; each writer process wastes up to a page at the end
_CHECK_CHUNK = 64


class WriterError(ValueError):
    """Bad arguments, an existing output, or a source with no valid image."""


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold Ctrl-C while worker processes are forked or work is queued, then act on it.

    Python drops a KeyboardInterrupt that is raised inside a fork handler (the logging module
    registers one), so a Ctrl-C landing on a fork would be lost and the write would carry on.
    And one raised inside ``Queue.put`` just after it takes the queue's lock leaves that lock
    held: the queue's feeder thread and its exit-time finaliser then wait for it forever, and
    the interrupted command never exits. Here SIGINT is only recorded and raised afterwards.
    The forked workers keep the recording handler: on Ctrl-C in a terminal they leave the
    clean-up to this process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be changed from the main thread
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(*caught[0])  # the default handler raises KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Pass 1: check every file in parallel
# --------------------------------------------------------------------------------------------

_CHECK_SOURCE = None


def _check_init(source) -> None:
    global _CHECK_SOURCE
    _CHECK_SOURCE = source
    _limit_cv2_threads()


def _check_chunk(bounds: tuple[int, int]) -> list[tuple[Optional[str], int, int]]:
    start, stop = bounds
    return [_CHECK_SOURCE.check(i) for i in range(start, stop)]


def _limit_cv2_threads() -> None:
    # each writer process is one core's worth of work; OpenCV's own thread pool would
    # oversubscribe the machine (and is not fork-safe once started in the parent)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _check_all(source, workers: int, max_resolution: Optional[int]):
    """Returns (good mask [N] bool, skipped list, largest stored image in bytes)."""
    import multiprocessing

    n = len(source)
    good = np.zeros(n, dtype=bool)
    skipped: list[dict] = []
    largest = 0
    if isinstance(source, IdxSource):  # fixed-size arrays: nothing can be broken per item
        good[:] = True
        return good, skipped, source.width * source.height * 3
    chunks = [(s, min(s + _CHECK_CHUNK, n)) for s in range(0, n, _CHECK_CHUNK)]
    started = time.perf_counter()
    last_log = started
    with _ctrl_c_held():
        pool = multiprocessing.Pool(workers, initializer=_check_init, initargs=(source,))
    with pool:
        for (start, _), results in zip(chunks, pool.imap(_check_chunk, chunks)):
            for offset, (reason, w, h) in enumerate(results):
                i = start + offset
                if reason is None:
                    good[i] = True
                    if max_resolution is not None and max(w, h) > max_resolution:
                        ratio = max_resolution / max(w, h)
                        w, h = int(w * ratio), int(h * ratio)
                    largest = max(largest, w * h * 3)
                else:
                    skipped.append({"path": source.describe(i), "reason": reason})
            now = time.perf_counter()
            if now - last_log > 10:
                logger.info("checked %d / %d files (%.0f/s)", start + len(results), n,
                            (start + len(results)) / (now - started))
                last_log = now
    return good, skipped, largest


# --------------------------------------------------------------------------------------------
# Pass 2: FFCV write
# --------------------------------------------------------------------------------------------


class _WriterDataset:
    """What FFCV's writer indexes: ``(image [H, W, 3] uint8, label)`` per item.

    Lazy: it holds the source (paths) only. A file that fails now although it passed the check
    (it changed in between) must not kill the FFCV worker, whose parent would then wait
    forever; it is recorded in ``failure_dir`` and the write is rejected afterwards.
    """

    def __init__(self, source, failure_dir: Path):
        self.source = source
        self.failure_dir = failure_dir
        self._pid = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        if self._pid != os.getpid():
            self._pid = os.getpid()
            _limit_cv2_threads()
        labels = self.source.labels  # [N] class indices, or [N, C] multi-hot rows
        label = int(labels[index]) if labels.ndim == 1 else np.ascontiguousarray(labels[index])
        try:
            image = self.source.load(index)
        except Exception as e:  # noqa: BLE001 - any failure is recorded, the write rejected
            with open(self.failure_dir / f"failed-{os.getpid()}.txt", "a") as f:
                f.write(f"{self.source.describe(index)}\t{type(e).__name__}: {e}\n")
            image = np.zeros((8, 8, 3), dtype=np.uint8)
        return image, label


_CHUNK = 100  # images per unit of work handed to an FFCV writer process


def _make_writer(path: str, fields: dict, page_size: int, workers: int):
    """An FFCV ``DatasetWriter`` with flat memory that fails instead of hanging.

    FFCV 1.0.2's ``from_indexed_dataset`` makes a Python list of every ``(position, index)``
    pair and queues all of it at once (a few hundred bytes per image: hundreds of MB for
    ImageNet), and its ``_write_common`` polls a shared counter until every sample is written,
    so a dead worker (killed, out of memory) makes it wait forever. This subclass repeats those
    two methods, same steps in the same order, but hands out numpy chunks a few at a time as the
    workers finish them, and checks the workers' liveness while it polls.
    """
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.writer import DatasetWriter, worker_job_indexed_dataset

    class _SafeDatasetWriter(DatasetWriter):
        def from_indexed_dataset(self, dataset, indices, chunksize: int = _CHUNK, shuffle_indices: bool = False):
            indices = np.asarray(indices, dtype=np.int64)

            def chunks():
                for start in range(0, len(indices), chunksize):
                    stop = min(start + chunksize, len(indices))
                    # rows of (position in the file, index in the dataset), as FFCV's worker reads them
                    yield np.stack([np.arange(start, stop, dtype=np.int64), indices[start:stop]], axis=1)

            self._write_common(len(indices), chunks(), worker_job_indexed_dataset, (dataset,))

        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
            self.num_samples = num_samples
            self.metadata_sm = None
            workqueue: Queue = Queue()
            allocations_queue: Queue = Queue()
            processes: list[Process] = []
            todo = iter(queue_content)
            submitted, stopped, finished = 0, False, False
            in_flight = 4 * self.num_workers * _CHUNK  # enough queued work to keep every worker busy
            done_number = Value(ctypes.c_uint64, 0)

            @_ctrl_c_held()  # a Ctrl-C inside workqueue.put would leave the queue's lock held
            def top_up() -> None:
                nonlocal submitted, stopped
                while submitted < num_samples and submitted - done_number.value < in_flight:
                    chunk = next(todo)
                    workqueue.put(chunk)
                    submitted += len(chunk)
                if submitted >= num_samples and not stopped:
                    # the stop tokens go out with the last chunk: the workers may finish before
                    # this loop looks again, and must not wait for tokens that never come
                    for _ in range(self.num_workers):
                        workqueue.put(None)
                    stopped = True

            try:
                self.prepare()  # header, field descriptors, and the shared metadata block
                allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
                worker_args = (workqueue, self.metadata_sm, self.metadata_type, self.fields,
                               allocator, done_number, allocations_queue, *extra_worker_args)
                processes = [Process(target=work_fn, args=worker_args) for _ in range(self.num_workers)]
                top_up()
                with _ctrl_c_held():
                    for p in processes:
                        p.start()
                last_log = time.perf_counter()
                while done_number.value != self.num_samples:
                    dead = [p for p in processes if p.exitcode not in (None, 0)]
                    if dead:
                        raise WriterError(
                            f"an FFCV writer process exited with code {dead[0].exitcode} "
                            f"(killed, or out of memory?); nothing was written to the output"
                        )
                    top_up()
                    if time.perf_counter() - last_log > 10:
                        logger.info("wrote %d / %d images", done_number.value, self.num_samples)
                        last_log = time.perf_counter()
                    time.sleep(0.02)
                allocation_list = []
                for _ in processes:
                    allocation_list.extend(allocations_queue.get())
                for p in processes:
                    p.join()
                self.finalize(allocation_list)
                finished = True
            finally:
                if not finished:
                    # work nobody will read must not keep this process from exiting
                    workqueue.cancel_join_thread()
                    allocations_queue.cancel_join_thread()
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                        p.join()
                if isinstance(self.metadata_sm, shared_memory.SharedMemory):
                    self.metadata_sm.close()
                    self.metadata_sm.unlink()

    return _SafeDatasetWriter(path, fields, page_size=page_size, num_workers=workers)


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
            or an image list file as a :class:`~eigenmap.data.list_source.ListSpec`.
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
    failure_dir = out.with_name(f".{out.name}.failures-{os.getpid()}")
    try:
        t0 = time.perf_counter()
        good, skipped, largest = _check_all(source, workers, max_resolution)
        skipped = [{"path": p, "reason": "not in a class folder"} for p in source.stray_files] + skipped
        if isinstance(source, ListSource):  # unreadable lines too, each entry with its line number
            skipped = source.with_line_numbers(good, skipped)
        good_indices = np.flatnonzero(good)
        logger.info("checked %d files in %.1f s: %d good, %d skipped",
                    len(source), time.perf_counter() - t0, len(good_indices), len(skipped))
        if len(good_indices) == 0:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
            raise WriterError(f"source '{src}' has no valid image ({len(skipped)} files skipped: {reasons})")

        failure_dir.mkdir(exist_ok=True)
        fields = {
            "image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality),
            # multi-hot rows [C] of 0/1 as uint8: C bytes a sample
            "label": (NDArrayField(np.dtype("uint8"), (source.labels.shape[1],)) if source.labels.ndim == 2
                      else IntField()),
        }
        writer = _make_writer(str(tmp_beton), fields, _page_size_for(largest), min(workers, len(good_indices)))
        t1 = time.perf_counter()
        writer.from_indexed_dataset(_WriterDataset(source, failure_dir), indices=good_indices)
        logger.info("wrote %d images in %.1f s", len(good_indices), time.perf_counter() - t1)

        failures = [line for f in sorted(failure_dir.iterdir()) for line in f.read_text().splitlines()]
        if failures:
            raise WriterError(
                f"{len(failures)} files changed or became unreadable while writing (e.g. {failures[0]}); "
                f"nothing was written to '{out}': run again"
            )

        labels = np.asarray(source.labels)[good_indices]
        label_kind = "multi" if labels.ndim == 2 else "single"
        # multi-hot: images carrying each label
        counts = labels.sum(axis=0) if label_kind == "multi" else np.bincount(labels, minlength=len(source.classes))
        for cls, c in zip(source.classes, counts):
            if c == 0:
                logger.warning("class '%s' has no valid image; its label is kept so labels match folders", cls)
        manifest = {
            "format_version": MANIFEST_VERSION,
            "source": str(Path(src).absolute()),
            "source_kind": source.kind,
            "classes": list(source.classes),
            "label_names": getattr(source, "label_names", None),
            "counts": {c: int(k) for c, k in zip(source.classes, counts)},
            "label_kind": label_kind,
            "num_labels": len(source.classes),
            **(source.manifest_keys(good_indices) if isinstance(source, ListSource) else {}),
            "num_images": int(len(good_indices)),
            "skipped": skipped,
            "max_resolution": max_resolution,
            "write_mode": write_mode,
            "jpeg_quality": jpeg_quality if write_mode == "jpg" else None,
        }
        fsync_file(tmp_beton)
        manifest.update(bytes=tmp_beton.stat().st_size, sha256=sha256_of(tmp_beton))
        write_manifest(manifest, tmp_manifest)
        _publish(tmp_beton, tmp_manifest, out, overwrite)
        return manifest
    finally:
        tmp_manifest.unlink(missing_ok=True)
        if tmp_beton.exists():
            tmp_beton.unlink()
        if failure_dir.exists():
            for f in failure_dir.iterdir():
                f.unlink()
            failure_dir.rmdir()
        if isinstance(source, IdxSource):
            source.close()
