"""Progress of long work, the project's one helper for it: retrieval's sweep and baselines,
feature extraction, kNN blocks, probe epochs, training's text lines.

On a terminal (when asked): a tqdm bar, the latest detail beside it. Otherwise (a log file, a
scheduler's output): plain ``logging`` lines, no carriage returns or escape codes (a bar in a log
file is one line of thousands of ``\\r``): one after the first unit, so the estimate shows early,
then at most one every ``every_seconds`` (0: one per update), and one at the end, each with the
amount done, the elapsed time, an estimate of the time left and the latest detail.

Work may be counted in units of unequal size (retrieval weighs each unit by its planned work,
:mod:`retrieval.plan`): the estimate is the elapsed time over the share done, or before anything
is done a rate the caller measured (``seconds_per_unit``). Times read as :func:`clock` gives them.

A unit that takes far longer than the earlier ones (:class:`SlowdownWatch`: over 5x their
median) is said as a warning, with the threads and CPUs at hand: on a busy machine a step can run
tens of times below its own rate (a probe epoch of 0.2 s took 14 s), and a user should learn it
from the console, not from the clock.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from typing import Optional

__all__ = ["Progress", "SlowdownWatch", "clock", "SLOW_FACTOR"]

SLOW_FACTOR = 5.0  # a unit this many times slower than the median of the earlier ones is said

_log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour): ``75`` -> ``1:15``, ``3723`` -> ``1:02:03``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class SlowdownWatch:
    """Says (a logging warning) when a repeated unit of work runs far below its own earlier rate.

    Args:
        what: the work, e.g. ``"linear probe"``; ``unit``: one unit of it (``"epoch"``).
        factor: a unit slower than ``factor`` x the median of the earlier units is said.
        min_earlier: units seen before any is judged (the first ones include start-up).
        every_seconds: least time between two warnings.
    """

    def __init__(self, what: str, unit: str, *, factor: float = SLOW_FACTOR, min_earlier: int = 3,
                 every_seconds: float = 60.0, logger: Optional[logging.Logger] = None):
        self.what, self.unit, self.factor, self.min_earlier, self.every = what, unit, factor, min_earlier, every_seconds
        self.log = logger or _log
        self.seconds: list[float] = []
        self.said_at: Optional[float] = None

    def observe(self, seconds: float) -> Optional[str]:
        """One more unit took ``seconds``; returns the warning when it was said, else None."""
        earlier, self.seconds = self.seconds, self.seconds + [seconds]
        if len(earlier) < self.min_earlier:
            return None
        typical, now = statistics.median(earlier), time.perf_counter()
        if seconds <= self.factor * typical or (self.said_at is not None and now - self.said_at < self.every):
            return None
        self.said_at = now
        message = (f"{self.what}: {self.unit} {len(self.seconds)} took {seconds:.3g} s, {seconds / typical:.0f}x the "
                   f"median of the earlier ones ({typical:.3g} s): far below its own rate; other processes may hold "
                   f"the CPUs ({_threads_at_hand()})")
        self.log.warning("%s", message)
        return message


def _threads_at_hand() -> str:
    """Torch's threads (when torch is loaded) and the CPUs this process may run on."""
    torch = sys.modules.get("torch")
    threads = f"{torch.get_num_threads()} torch threads, " if torch is not None else ""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{threads}{cpus} CPUs available to this process"


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("sh", "ss", "x", "tch")) else "s")  # batches, epochs


class Progress:
    """``update(amount, detail)`` after each unit of work; ``close()`` at the end.

    Args:
        total: the work of the whole loop (units, or planned work when ``counted`` is False).
        desc: what the loop does, e.g. ``"kNN"``; ``unit``: what one unit is (``"block"``).
        every_seconds: least time between two log lines (the first and, from ``close``, the last
            always come; 0: a line per update, the last included).
        terminal: draw a bar (default: when stderr is a terminal).
        logger: where the lines go, at INFO.
        seconds_per_unit: a measured rate for the estimate before any work is done.
        counted: the line shows ``done/total units``; False: only the share (for planned work,
            whose units mean nothing to a reader).
        watch: warn when a unit runs far below the earlier ones' rate (:class:`SlowdownWatch`;
            off for work whose units differ by design).
    """

    def __init__(self, total: float, desc: str, *, unit: str = "unit", every_seconds: float = 30.0,
                 terminal: Optional[bool] = None, logger: Optional[logging.Logger] = None,
                 seconds_per_unit: Optional[float] = None, counted: bool = True, watch: bool = True):
        self.total, self.desc, self.unit, self.every = max(total, 0), desc, unit, every_seconds
        self.log, self.rate, self.counted = logger or _log, seconds_per_unit, counted
        self.done, self.detail, self.started = 0, "", time.perf_counter()
        self.last_line: Optional[float] = None
        self.last_update = self.started
        self.watch = SlowdownWatch(desc, unit, logger=self.log) if watch else None
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0)

    def update(self, amount: float = 1, detail: str = "") -> None:
        """``amount`` more work is finished; ``detail`` (e.g. ``"val top-1 61.2"``) goes beside it."""
        self.done += amount
        self.detail = detail or self.detail
        now = time.perf_counter()
        if self.watch is not None and amount > 0:
            self.watch.observe((now - self.last_update) / amount)
        self.last_update = now
        if self.bar is not None:
            if detail:
                self.bar.set_postfix_str(detail, refresh=False)
            self.bar.update(amount)
            return
        if self.every == 0 or (self.done < self.total and (self.last_line is None or now - self.last_line >= self.every)):
            self.last_line = now
            self.log.info("%s", self.line(now))

    def left_seconds(self, now: Optional[float] = None) -> Optional[float]:
        """Estimated seconds until ``total`` is done (None when nothing can be said yet)."""
        elapsed = (now or time.perf_counter()) - self.started
        rate = elapsed / self.done if self.done > 0 and elapsed > 0 else self.rate
        return None if rate is None else max(0.0, self.total - self.done) * rate

    def line(self, now: Optional[float] = None) -> str:
        """``kNN: 4/10 blocks (40%), 1:02 elapsed, about 1:33 left; detail``."""
        now = now or time.perf_counter()
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        count = f"{self.done:g}/{self.total:g} {_plural(self.unit)} ({share:.0%})" if self.counted else f"{share:.0%}"
        left = self.left_seconds(now)
        eta = f", about {clock(left)} left" if left is not None and share < 1 else ""
        return (f"{self.desc}: {count}, {clock(now - self.started)} elapsed{eta}"
                f"{f'; {self.detail}' if self.detail else ''}")

    def close(self) -> None:
        """The last line (or the bar's end)."""
        if self.bar is not None:
            self.bar.close()
        else:
            self.log.info("%s", self.line())
