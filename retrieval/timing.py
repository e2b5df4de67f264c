"""Wall-clock timing of searches, robust to a shared machine.

Runs are interleaved: each round runs every search once, so load that drifts over the minutes a
benchmark takes slows all lengths alike instead of whichever ran last, and two runs can be
compared round by round (a ratio per round, then its median and range). One warm-up round is
not recorded; the best round (the least disturbed) and the median are kept.
Each timed run also records the CPU share other processes (and, on a VM, the hypervisor) took
meanwhile, from /proc/stat, so a reader can see how quiet the machine was.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable

_MIN_TICKS = 20  # /proc/stat counts 1/100 s ticks per CPU: shorter runs give no usable share

logger = logging.getLogger(__name__)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of the whole machine since boot; None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total


def timed_run(fn: Callable[[], object], min_seconds: float = 0.0) -> tuple[float, float | None]:
    """Run ``fn`` once, or back to back until ``min_seconds`` have passed: (wall seconds of one
    call, the mean over the calls; share of the machine's CPU used by others meanwhile, or None
    where /proc/stat is missing or the run was too short to tell).

    A search of a small database takes milliseconds, where one scheduler hiccup is a large share of
    the time: a measurement of at least ``min_seconds`` averages such hiccups out.
    """
    before, own0 = _cpu_ticks(), os.times()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    after, own1 = _cpu_ticks(), os.times()
    seconds = elapsed / calls
    if before is None or after is None or after[1] - before[1] < _MIN_TICKS:
        return seconds, None  # too short for the clock-tick counters to say anything
    own = (own1.user + own1.system - own0.user - own0.system) * os.sysconf("SC_CLK_TCK")
    other = (after[0] - before[0] - own) / (after[1] - before[1])
    return seconds, min(1.0, max(0.0, other))


def wait_for_quiet(max_seconds: float, busy_share: float, window_seconds: float = 0.5) -> bool:
    """Sleep until other processes use less than ``busy_share`` of the machine's CPU over a
    ``window_seconds`` window; False when ``max_seconds`` pass first (or /proc/stat is missing)."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        before = _cpu_ticks()
        time.sleep(window_seconds)
        after = _cpu_ticks()
        if before is None or after is None:
            return False
        if after[1] > before[1] and (after[0] - before[0]) / (after[1] - before[1]) < busy_share:
            return True
    return False


def time_once(fn: Callable[[], object], *, busy_retries: int = 0, busy_share: float = 0.1,
              quiet_wait_seconds: float = 0.0, min_seconds: float = 0.0) -> tuple[float, float | None, int]:
    """Time ``fn`` once (back to back for at least ``min_seconds``, see :func:`timed_run`), again (``busy_retries`` times at most) while other processes took more
    than ``busy_share`` of the machine's CPU during the try, waiting up to ``quiet_wait_seconds``
    for a quiet machine before each try.

    Returns:
        (seconds of the fastest try, the CPU share others took during it or None, tries made).
    """
    tries = []
    while not tries or (len(tries) <= busy_retries and tries[-1][1] is not None and tries[-1][1] > busy_share):
        if quiet_wait_seconds > 0:
            wait_for_quiet(quiet_wait_seconds, busy_share)
        tries.append(timed_run(fn, min_seconds))
    seconds, other = min(tries, key=lambda t: t[0])
    return seconds, other, len(tries)


def summarise(seconds: list[float], background: list[float | None], tries: list[int]) -> dict:
    """The timing record of one run over its rounds: the lists, ``best_seconds``, ``median_seconds``."""
    return {"seconds": list(seconds), "background_cpu": list(background), "tries": list(tries),
            "best_seconds": min(seconds), "median_seconds": statistics.median(seconds)}


def time_interleaved(runs: dict[str, Callable[[], object]], *, repeats: int = 3, warmup: int = 1,
                     busy_retries: int = 0, busy_share: float = 0.1,
                     quiet_wait_seconds: float = 0.0, min_seconds: float = 0.0) -> dict[str, dict]:
    """Time each callable ``repeats`` times in interleaved rounds, after ``warmup`` untimed rounds.

    Args:
        runs: name -> callable to time.
        repeats: timed rounds.
        warmup: untimed rounds first (caches, FAISS/BLAS thread pools, lazy allocations).
        busy_retries: a run during which other processes took more than ``busy_share`` of the
            machine's CPU is run again, up to this many times; the round keeps its fastest try.
        busy_share: the share of the machine's CPU above which a run counts as disturbed.
        quiet_wait_seconds: before each timed try, wait up to this long for the other processes'
            share to drop under ``busy_share`` (0: no wait).
        min_seconds: each timed try calls its callable back to back for at least this long and
            records the seconds of one call (0: one call).

    Returns:
        name -> ``{"seconds": [...], "background_cpu": [...], "tries": [...], "best_seconds",
        "median_seconds"}``, one entry per round in the lists.
    """
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    rounds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            rounds[name].append(time_once(fn, busy_retries=busy_retries, busy_share=busy_share,
                                          quiet_wait_seconds=quiet_wait_seconds, min_seconds=min_seconds))
    out = {}
    for name, timed in rounds.items():
        out[name] = summarise(*(list(column) for column in zip(*timed)))
        logger.info("%s: best %.4f s, median %.4f s", name, out[name]["best_seconds"], out[name]["median_seconds"])
    return out
