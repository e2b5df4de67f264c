"""ImageFolder / IDX -> FFCV ``.beton`` plus its manifest, in parallel, with flat memory.

One pass over the source, spread over ``workers`` FFCV writer processes:

1. **write**: each process reads, decodes and checks each file once
   (:func:`~eigenmap.data.sources.decode_image`: zero bytes, truncated or corrupt, not an
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

Each file is decoded once: a separate check pass before the write (decoding every file twice)
made the writer 0.59x as fast as FFCV's own ``DatasetWriter`` on 200,000 small JPEGs;
``tools/bench_scale.py`` measures the two side by side.

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
from .sources import IdxSource, ImageFolderSource, open_source

__all__ = ["WriterError", "write_beton", "WRITE_MODES"]

logger = logging.getLogger(__name__)

WRITE_MODES = ("jpg", "raw")
_MIN_PAGE_SIZE = 1 << 21  # FFCV's smallest; each writer process wastes up to a page at the end


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
# The write: each file decoded once, in the FFCV writer processes
# --------------------------------------------------------------------------------------------


def _limit_cv2_threads() -> None:
    # each writer process is one core's worth of work; OpenCV's own thread pool would
    # oversubscribe the machine (and is not fork-safe once started in the parent)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


class _TooLarge(Exception):
    """A sample's stored bytes do not fit one FFCV page."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def _encode_sample(sample, dest_ix, field_names, metadata, allocator, fields) -> None:
    """FFCV's ``handle_sample`` (same steps, one retry on a fresh page), with an allocation
    that raises :class:`_TooLarge` instead of FFCV's ``ValueError`` for a sample bigger than a page."""

    def malloc(size: int):
        if size > allocator.page_size:
            raise _TooLarge(size)
        return allocator.malloc(size)

    for attempt in range(2):
        try:
            allocator.set_current_sample(dest_ix)
            for field_name, field, value in zip(field_names, fields.values(), sample):
                field.encode(metadata[field_name][dest_ix:dest_ix + 1], value, malloc)
            return
        except MemoryError:  # the sample did not fit the rest of the page: FFCV retries on a new one
            if attempt == 1:
                raise


def _source_worker_job(input_queue, metadata_sm, metadata_type, fields, allocator, done_number,
                       allocations_queue, source) -> None:
    """An FFCV writer process that reads, checks and converts each file once (``source.read``):
    a good image is encoded into the file at its position, a bad one leaves its position empty
    and is reported with its reason; the parent drops the empty positions when it finalises."""
    _limit_cv2_threads()
    metadata = np.frombuffer(metadata_sm.buf, dtype=metadata_type)
    field_names = metadata_type.names
    skipped: list[tuple[int, str]] = []  # (position, reason)
    too_large: list[tuple[int, int]] = []  # (position, raw bytes of the stored image)
    with allocator:  # flushes the last page on exit
        while (chunk := input_queue.get()) is not None:
            for dest_ix, source_ix in chunk:
                reason, image = source.read(int(source_ix))
                if reason is not None:
                    skipped.append((int(dest_ix), reason))
                    continue
                try:
                    _encode_sample((image, _label_of(source, source_ix)), dest_ix, field_names, metadata,
                                   allocator, fields)
                except _TooLarge:
                    too_large.append((int(dest_ix), _stored_raw_bytes(image, fields["image"].max_resolution)))
            with done_number.get_lock():
                done_number.value += len(chunk)
    allocations_queue.put((allocator.allocations, skipped, too_large))


def _label_of(source, index):
    """Item ``index``'s label field: a class index, or its multi-hot row ``[C]`` uint8."""
    labels = source.labels  # [N] class indices, or [N, C] multi-hot rows
    return int(labels[index]) if labels.ndim == 1 else np.ascontiguousarray(labels[index])


def _stored_raw_bytes(image: np.ndarray, max_resolution: Optional[int]) -> int:
    h, w = image.shape[:2]
    if max_resolution is not None and max(w, h) > max_resolution:  # as FFCV's resizer shrinks it
        ratio = max_resolution / max(w, h)
        w, h = int(w * ratio), int(h * ratio)
    return w * h * 3


_CHUNK = 100  # images per unit of work handed to an FFCV writer process


def _make_writer(path: str, fields: dict, page_size: int, workers: int):
    """An FFCV ``DatasetWriter`` with flat memory that fails instead of hanging.

    FFCV 1.0.2's ``from_indexed_dataset`` makes a Python list of every ``(position, index)``
    pair and queues all of it at once (a few hundred bytes per image: hundreds of MB for
    ImageNet), and its ``_write_common`` polls a shared counter until every sample is written,
    so a dead worker (killed, out of memory) makes it wait forever. This subclass repeats those
    two methods, same steps in the same order, but hands out numpy chunks a few at a time as the
    workers finish them, and checks the workers' liveness while it polls; its processes write
    their pages without waiting for each other (``_PagesInAnyOrder``). ``from_source`` is the
    writer's own entry: every file decoded once in the writer processes, bad files left out.
    """
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.types import ALLOC_TABLE_TYPE
    from ffcv.writer import DatasetWriter, worker_job_indexed_dataset

    def chunks_of(indices: np.ndarray, chunksize: int):
        for start in range(0, len(indices), chunksize):
            stop = min(start + chunksize, len(indices))
            # rows of (position in the file, index in the dataset), as FFCV's worker reads them
            yield np.stack([np.arange(start, stop, dtype=np.int64), indices[start:stop]], axis=1)

    class _PagesInAnyOrder(MemoryAllocator):
        """FFCV's page allocator, each full page written at its own offset (``pwrite``).

        FFCV's appends pages in page order: a process whose page is full polls, every
        millisecond, until every earlier page is written, so one writer process slowed down (a
        busy machine, a large image) stalls the others. Written at their offsets, pages can land
        in any order; the file's bytes are the same (the zeros before the first page become a
        hole, which reads as zeros).
        """

        def __enter__(self):
            self.fd = os.open(self.fname, os.O_WRONLY)

        def flush_page(self):
            if self.my_page < 0:  # no page allocated yet
                return
            view, offset = memoryview(self.page_data), self.offset + self.my_page * self.page_size
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written

        def __exit__(self, exc_type, exc_val, exc_tb):
            self.flush_page()
            os.close(self.fd)

    class _SafeDatasetWriter(DatasetWriter):
        def from_indexed_dataset(self, dataset, indices, chunksize: int = _CHUNK, shuffle_indices: bool = False):
            indices = np.asarray(indices, dtype=np.int64)
            reports = self._write_common(len(indices), chunks_of(indices, chunksize), worker_job_indexed_dataset,
                                         (dataset,))
            self._finalize_and_release([a for allocations in reports for a in allocations])

        def from_source(self, source, indices, chunksize: int = _CHUNK):
            """Write ``source``'s items ``indices`` in that order, each decoded once; bad ones are
            left out. Returns ``(skipped, too_large)``: ``[(index in source, reason)]``, and
            ``[(index in source, raw bytes)]`` of the images too large for a page (when there
            are any, or no good image at all, the file is left unfinished)."""
            indices = np.asarray(indices, dtype=np.int64)
            reports = self._write_common(len(indices), chunks_of(indices, chunksize), _source_worker_job, (source,))
            skipped = sorted(item for _, bad, _ in reports for item in bad)
            too_large = sorted(item for _, _, big in reports for item in big)
            try:
                if not too_large and len(skipped) < len(indices):
                    self._finalize_compacted([a for allocations, _, _ in reports for a in allocations],
                                             [pos for pos, _ in skipped])
            finally:
                self._release_metadata()
            return ([(int(indices[pos]), reason) for pos, reason in skipped],
                    [(int(indices[pos]), size) for pos, size in too_large])

        def _finalize_compacted(self, allocations: list, empty_positions: list[int]) -> None:
            """FFCV's ``finalize`` for a file whose ``empty_positions`` hold no sample: the other
            samples' metadata rows move up in order and the allocation table is renumbered to
            match, so the file holds exactly the good samples, numbered 0..G-1. (The metadata
            region keeps its size; the rows it no longer needs stay zero, before the data.)"""
            keep = np.ones(self.num_samples, dtype=bool)
            keep[empty_positions] = False
            new_id = np.cumsum(keep) - 1
            metadata = np.frombuffer(self.metadata_sm.buf, dtype=self.metadata_type)[keep]
            table = np.array(allocations, dtype=ALLOC_TABLE_TYPE)
            table["sample_id"] = new_id[table["sample_id"]]
            table = table[np.argsort(table["sample_id"], kind="stable")]
            self.num_samples = int(keep.sum())
            self.header["num_samples"] = self.num_samples
            with open(self.fname, "r+b") as fp:
                fp.seek(self.metadata_start)
                fp.write(metadata.tobytes())
                self.header["alloc_table_ptr"] = fp.seek(0, os.SEEK_END)
                fp.write(table.tobytes())
                fp.seek(0)
                fp.write(self.header.tobytes())

        def _finalize_and_release(self, allocations: list) -> None:
            try:
                self.finalize(allocations)
            finally:
                self._release_metadata()

        def _release_metadata(self) -> None:
            if isinstance(self.metadata_sm, shared_memory.SharedMemory):
                self.metadata_sm.close()
                self.metadata_sm.unlink()
                self.metadata_sm = None

        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
            """Run the writer processes over ``queue_content``; returns what each put on the
            allocations queue. The shared metadata block stays until ``_release_metadata``."""
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
                allocator = _PagesInAnyOrder(self.fname, self.data_region_start, self.page_size)
                worker_args = (workqueue, self.metadata_sm, self.metadata_type, self.fields,
                               allocator, done_number, allocations_queue, *extra_worker_args)
                processes = [Process(target=work_fn, args=worker_args) for _ in range(self.num_workers)]
                top_up()
                with _ctrl_c_held():
                    for p in processes:
                        p.start()
                started = last_log = time.perf_counter()
                while done_number.value != self.num_samples:
                    dead = [p for p in processes if p.exitcode not in (None, 0)]
                    if dead:
                        raise WriterError(
                            f"an FFCV writer process exited with code {dead[0].exitcode} "
                            f"(killed, or out of memory?); nothing was written to the output"
                        )
                    top_up()
                    if time.perf_counter() - last_log > 10:
                        done, elapsed = done_number.value, time.perf_counter() - started
                        eta = elapsed / max(done, 1) * (self.num_samples - done)
                        logger.info("wrote %d / %d images (%.0f/s), ETA %.0f s", done, self.num_samples,
                                    done / elapsed, eta)
                        last_log = time.perf_counter()
                    time.sleep(0.02)
                reports = [allocations_queue.get() for _ in processes]
                for p in processes:
                    p.join()
                finished = True
                return reports
            finally:
                if not finished:
                    # work nobody will read must not keep this process from exiting
                    workqueue.cancel_join_thread()
                    allocations_queue.cancel_join_thread()
                    self._release_metadata()
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                        p.join()

    return _SafeDatasetWriter(path, fields, page_size=page_size, num_workers=workers)


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
    if isinstance(source, IdxSource):
        return _page_size_for(source.width * source.height * 3)
    bound = None if max_resolution is None else max_resolution * max_resolution * 3
    if bound is not None and (write_mode == "raw" or _page_size_for(bound) == _MIN_PAGE_SIZE):
        return _page_size_for(bound)
    if write_mode == "jpg":
        largest = _largest_file_bytes(source)
        return _page_size_for(largest if bound is None else min(bound, largest))
    return _MIN_PAGE_SIZE


def _largest_file_bytes(source: ImageFolderSource) -> int:
    root, largest = os.fsencode(source.root), 0
    for rel in source.rel_paths:
        try:
            largest = max(largest, os.stat(os.path.join(root, rel)).st_size)
        except OSError:  # a broken file: the writer processes give its reason
            pass
    return largest


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
        src: an ImageFolder root, or Fashion-MNIST/MNIST IDX files (a folder or the images file).
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
        candidates = np.arange(len(source))
        page_size = _first_page_size(source, max_resolution, write_mode)
        t0 = time.perf_counter()
        writer = _make_writer(str(tmp_beton), fields, page_size, min(workers, len(candidates)))
        bad, too_large = writer.from_source(source, candidates)
        if too_large:  # rare: only without a known bound on the stored size (see _first_page_size)
            page_size = _page_size_for(max(size for _, size in too_large))
            logger.warning("%d images do not fit %d MiB FFCV pages (e.g. %s); writing again with %d MiB pages",
                           len(too_large), writer.page_size >> 20, source.describe(too_large[0][0]),
                           page_size >> 20)
            writer = _make_writer(str(tmp_beton), fields, page_size, min(workers, len(candidates)))
            bad, too_large = writer.from_source(source, candidates)
            assert not too_large, "a page sized for the largest image holds it"
        skipped = ([{"path": p, "reason": "not in a class folder"} for p in source.stray_files]
                   + [{"path": source.describe(i), "reason": reason} for i, reason in bad])
        good = np.ones(len(source), dtype=bool)
        good[[i for i, _ in bad]] = False
        if isinstance(source, ListSource):  # unreadable lines too, each entry with its line number
            skipped = source.with_line_numbers(good, skipped)
        good_indices = np.flatnonzero(good)
        logger.info("wrote %d images in %.1f s (%d files skipped)", len(good_indices), time.perf_counter() - t0,
                    len(skipped))
        if len(good_indices) == 0:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
            raise WriterError(f"source '{src}' has no valid image ({len(skipped)} files skipped: {reasons})")

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
        manifest.update(bytes=tmp_beton.stat().st_size, sha256=_flush_and_hash(tmp_beton))
        write_manifest(manifest, tmp_manifest)
        _publish(tmp_beton, tmp_manifest, out, overwrite)
        return manifest
    finally:
        tmp_manifest.unlink(missing_ok=True)
        if tmp_beton.exists():
            tmp_beton.unlink()
        if isinstance(source, IdxSource):
            source.close()
