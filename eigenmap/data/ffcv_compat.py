"""Workarounds for FFCV 1.0.2, kept apart from the loaders that need them.

- :class:`KeepTorchThreads`: FFCV resets PyTorch's intra-op thread count whenever it is
  imported or builds or starts a loader; the guard puts the caller's setting back.
- :func:`numba_threads`: FFCV's thread count, capped at what numba was started with.
- :func:`stop_epoch`: ``EpochIterator.close`` only sets a flag; this stops and joins the
  epoch's decoding thread before its buffers are released.
- :func:`caller_order`: a ``TraversalOrder`` whose indices come from the caller (our sharding).
- :func:`add_seed_column`: a per-sample ``seed`` column in FFCV's metadata, the only per-sample
  input a compiled decoder gets besides the pixels.
"""

from __future__ import annotations

import logging
import operator
import queue
from typing import Callable

import numpy as np
import torch

__all__ = ["KeepTorchThreads", "numba_threads", "stop_epoch", "caller_order", "add_seed_column"]

logger = logging.getLogger(__name__)


class KeepTorchThreads:
    """Remembers ``torch.get_num_threads()`` and puts it back after FFCV changed it.

    Usable as a context manager (restores on exit) or by calling :meth:`restore`.
    """

    def __init__(self):
        self.threads = torch.get_num_threads()

    def restore(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def __enter__(self) -> "KeepTorchThreads":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def stop_epoch(it) -> None:
    """Stop FFCV's epoch thread and wait for it before its buffers are released.

    FFCV's ``EpochIterator.close`` only sets a flag and frees the epoch's memory; the daemon
    thread may still be decoding a batch in a numba parallel region. A process that then exits
    aborts inside numba's TBB pool ("terminate called without an active exception", SIGABRT:
    2 of 8 runs that left an epoch early), and a freed buffer could still be written. The
    thread sees the flag when its queue stays full for 0.5 s, so waiting suffices, except after
    its last batch, where it blocks on ``put(None)`` with no timeout: then the queue is emptied
    so that put lands.
    """
    it.terminate_event.set()
    while it.is_alive():
        if operator.length_hint(it.iter_ixes) == 0:  # every batch made: only the end marker is left
            try:
                while True:
                    it.output_queue.get_nowait()
            except queue.Empty:
                pass
        it.join(timeout=0.1)
    it.close()


def numba_threads(requested: int) -> int:
    """FFCV's thread count, at most what numba was started with (it refuses more)."""
    import numba

    limit = int(numba.config.NUMBA_NUM_THREADS)
    if requested > limit:
        logger.warning("data.loader_workers=%d exceeds the %d threads numba can use here; using %d",
                       requested, limit, limit)
    return max(1, min(requested, limit))


def caller_order(provider: Callable[[], np.ndarray]):
    """An FFCV ``TraversalOrder`` instance whose every epoch is ``provider()`` (dataset indices).

    The class is built here, not at import, so importing this module does not import FFCV.
    """
    from ffcv.traversal_order.base import TraversalOrder

    class _CallerOrder(TraversalOrder):
        """An FFCV traversal order that asks its owner for the indices of the next epoch.

        FFCV 1.0.2's ``Loader`` accepts an *instance* of a ``TraversalOrder`` and calls it with
        the loader, so ``__call__`` finishes the initialisation.
        """

        def __init__(self, provider: Callable[[], np.ndarray]):
            self._provider = provider

        def __call__(self, loader):
            super().__init__(loader)
            return self

        def sample_order(self, epoch: int):
            return self._provider()

    return _CallerOrder(provider)


def add_seed_column(metadata: np.ndarray, field: str) -> np.ndarray:
    """A copy of FFCV's per-sample metadata whose ``field`` records gain a uint64 ``seed``.

    FFCV hands each decoder its field's metadata records at run time, the only per-sample input
    besides the pixels; a column there is how a per-epoch seed reaches the compiled decoder.
    """
    old = metadata.dtype[field]
    new_field = np.dtype([(name, old[name]) for name in old.names] + [("seed", "<u8")])
    dtype = np.dtype([(name, new_field if name == field else metadata.dtype[name]) for name in metadata.dtype.names])
    out = np.zeros(len(metadata), dtype=dtype)
    for name in metadata.dtype.names:
        if name == field:
            for sub in old.names:
                out[field][sub] = metadata[field][sub]
        else:
            out[name] = metadata[name]
    return out
