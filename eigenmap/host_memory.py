"""Keep freed host memory in the process for reuse instead of handing it back to the kernel.

glibc serves every allocation above its mmap threshold (which it raises to at most 32 MB) with a
fresh ``mmap`` and unmaps it again on ``free``, so the next allocation of that size faults in
and zeroes every 4 KiB page anew. A CPU forward of ResNet-18 at 64 px on a batch of 256 makes
activations of up to 67 MB, above that ceiling; a training step allocates the same way. With
``mmap`` allocations off and the heap never trimmed, freed blocks are reused and the faults stop
after the first batch. ``tools/bench_extract.py`` (``page_faults_per_image``), with and without
``EIGENMAP_KEEP_FREED_MEMORY=0``: 230-242 minor page faults per image in the extraction and 3.73
ms of CPU per image with glibc's defaults, 2-7 and 3.10 ms with reuse. PyTorch's CPU performance
guide gets the same reuse from jemalloc or TCMalloc; this needs no preloaded library.

The cost is memory: the process keeps its heap at its peak until it exits, and freed blocks are
not always large enough for torch's 64-byte-aligned requests, so the heap can grow past the live
set before reuse starts (``tests/test_host_memory.py`` warms up for that reason). Over a real
job it was lost in the noise: ``/usr/bin/time -v python tools/bench_extract.py --rounds 1``
peaked at 1,754 MB resident, against 1,767 MB with ``EIGENMAP_KEEP_FREED_MEMORY=0``.

``EIGENMAP_KEEP_FREED_MEMORY=0`` leaves the C library's defaults alone (for instance on a node
shared by many small processes). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["keep_freed_memory", "OPT_OUT_VARIABLE"]

log = logging.getLogger(__name__)

OPT_OUT_VARIABLE = "EIGENMAP_KEEP_FREED_MEMORY"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before it is returned


def keep_freed_memory() -> bool:
    """Make this process's C allocator reuse freed blocks (glibc: no ``mmap`` chunks, no heap
    trimming). Process-wide and idempotent; call it at the start of a CPU-heavy process.

    Returns:
        True when glibc took both settings; False when ``EIGENMAP_KEEP_FREED_MEMORY=0`` or the C
        library has no ``mallopt`` (macOS, musl's stub).

    Raises:
        ValueError: ``EIGENMAP_KEEP_FREED_MEMORY`` is set to something other than 0 or 1.
    """
    wanted = os.environ.get(OPT_OUT_VARIABLE, "1").strip()
    if wanted not in ("0", "1"):
        raise ValueError(f"{OPT_OUT_VARIABLE}={wanted!r}: use 1 (the default: reuse freed host memory) or 0 "
                         "(the C library's own behaviour)")
    if wanted == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: host memory is left to its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
