"""CPU threads: what this process may really use, in one place (training workers, extraction,
the probe and kNN all size torch's thread pool here).

Two things made a linear probe on cached features run 16-37x slower on a busy machine than on
an idle one (issue 33; measured on this project's 2-core machines: 0.25 s per epoch vs 4.6-9.1
s, with two `while 1: pass` processes beside it 0.48 s vs 9.1 s):

- OpenMP's threads spin at every barrier (libgomp's active wait) while waiting for a partner
  that another process has taken the core from: each of thousands of small parallel regions
  then waits a scheduler time slice. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep;
  it is read once, when torch's OpenMP runtime loads, so :func:`passive_waits` runs when the
  ``eigenmap`` package is imported (before torch, in the CLI, the plain worker and Ray's workers,
  whose runtime environment sets it too). A value the user set is kept.
- torch sizes its pool by the machine's cores, not by the CPUs this process may run on: a
  container given 2 CPUs (an affinity mask or a cgroup CPU quota) on a 64-core host runs 64
  threads. :func:`available_cpus` reads both; :func:`set_torch_threads` caps the pool by it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

__all__ = ["available_cpus", "cgroup_cpu_quota", "passive_waits", "set_torch_threads", "WAIT_POLICY"]

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}  # the environment every process of a run gets


def passive_waits() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set; effective only before torch is first imported."""
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs' worth of time the cgroup mounted at ``root`` allows per period (v2 ``cpu.max``, v1
    ``cpu/cpu.cfs_quota_us``), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (rounded
    up), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def set_torch_threads(wanted: Optional[int] = None) -> int:
    """Size torch's intra-op pool: ``wanted`` (e.g. ``dist.cpus_per_worker``) or every available
    CPU, never more than :func:`available_cpus`. Returns the count set."""
    import torch

    threads = min(wanted or available_cpus(), available_cpus())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
