"""FFCV 1.0.2's ``DatasetWriter``, forked: the only module that repeats FFCV's code.

``ffcv==1.0.2`` (pyproject.toml) is the version followed: ``_SafeDatasetWriter`` overrides its
``from_indexed_dataset`` and ``_write_common`` (same steps in the same order) and adds
``from_source``, ``_finalize_compacted`` and a page allocator; a new FFCV release means reading
these against its ``ffcv/writer.py`` and ``ffcv/memory_allocator.py`` again. The reasons, each
measured or reproduced:

- **No hang when a writer process dies.** FFCV's ``_write_common`` polls a shared counter until
  every sample is written, so a dead worker (killed, out of memory) makes it wait forever; here
  the parent checks the workers' liveness while it polls and fails with :class:`WriterError`
  (``tests/data/test_data_writer.py``, a worker that exits at item 20).
- **One decode per file.** A separate check pass before the write (decoding every file twice)
  made the writer 0.59x as fast as FFCV's own ``DatasetWriter`` on 200,000 small JPEGs; here
  each writer process reads, checks and encodes each file once (``from_source``), a bad file
  leaves its position empty, and the empty positions are dropped when the tables are written
  (``_finalize_compacted``). ``tools/bench_scale.py`` measures the two writers side by side.
- **Flat memory.** FFCV's ``from_indexed_dataset`` makes a Python list of every ``(position,
  index)`` pair and queues it at once (hundreds of MB for ImageNet); here numpy chunks are
  handed out a few at a time as the workers finish them. Measured: the peak stayed 90-130 MiB
  above the process's baseline from 1,000 to 60,000 images.
- **Pages in any order.** FFCV's allocator appends pages in page order, so one slow writer
  process stalls the others; here each page is written at its own offset.
- **Ctrl-C is never lost** while processes are forked or work is queued (:func:`_ctrl_c_held`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from multiprocessing import Process, Queue, Value, shared_memory
from typing import Optional

import numpy as np

__all__ = ["WriterError", "make_writer"]

logger = logging.getLogger(__name__)


class WriterError(ValueError):
    """Bad arguments, an existing output, a writer process that died, or a source with no valid
    image (:func:`eigenmap.data.write_beton`'s error; defined here, where the deepest one is raised)."""




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


def make_writer(path: str, fields: dict, page_size: int, workers: int):
    """An FFCV ``DatasetWriter`` of ``path`` with ``workers`` processes: the fork this module's
    docstring describes. ``from_source`` is the writer's entry (every file decoded once in the
    writer processes, bad files left out); ``from_indexed_dataset`` is FFCV's, made safe."""
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
