"""Progress of long work (feature extraction, kNN blocks, probe epochs), readable both on a
terminal and in a redirected log.

On a terminal: a tqdm bar, the latest detail beside it. Otherwise (a log file, a scheduler's
output): plain ``logging`` lines, no carriage returns or escape codes (a bar in a log file is one
line of thousands of ``\\r``): one after the first unit, so the estimate shows early, then at
most one every ``every_seconds``, and one at the end, each with the count, the elapsed time, an
estimate of the time left and the latest detail.

Either way, a unit that takes far longer than the earlier ones (:class:`SlowdownWatch`: over
5x their median) is said as a warning, with the threads and CPUs at hand: on a busy machine
a step can run tens of times below its own rate (issue 33: a probe epoch of 0.2 s took 14 s),
and a user should learn it from the console, not from the clock.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from typing import Optional

__all__ = ["Progress", "SlowdownWatch", "format_seconds", "SLOW_FACTOR"]

SLOW_FACTOR = 5.0  # a unit this many times slower than the median of the earlier ones is said

_log = logging.getLogger("eigenmap.progress")


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1 m 15 s``; ``4000`` -> ``1 h 6 m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} m"


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
    from eigenmap.threads import available_cpus

    torch = sys.modules.get("torch")
    threads = f"{torch.get_num_threads()} torch threads, " if torch is not None else ""
    return f"{threads}{available_cpus()} CPUs available to this process"


class Progress:
    """``update(n, detail)`` after each unit of work of a loop of ``total`` units; ``close()`` at the end.

    Args:
        total: units in the loop.
        desc: what the loop does, e.g. ``"kNN"``; ``unit``: what one unit is (``"block"``).
        every_seconds: least time between two log lines (the first and the last always come).
        terminal: draw a bar (default: when stderr is a terminal).
        logger: where the lines go, at INFO (default ``eigenmap.progress``).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "batch", every_seconds: float = 30.0,
                 terminal: Optional[bool] = None, logger: Optional[logging.Logger] = None):
        self.total, self.desc, self.unit, self.every = max(int(total), 0), desc, unit, every_seconds
        self.log = logger or _log
        self.done, self.detail, self.started = 0, "", time.perf_counter()
        self.last_line: Optional[float] = None
        self.last_update = self.started
        self.watch = SlowdownWatch(desc, unit, logger=self.log)
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int = 1, detail: str = "") -> None:
        """``n`` more units are finished; ``detail`` (e.g. ``"val top-1 61.2"``) goes beside the count."""
        self.done += n
        self.detail = detail or self.detail
        now = time.perf_counter()
        if n > 0:
            self.watch.observe((now - self.last_update) / n)
        self.last_update = now
        if self.bar is not None:
            if detail:
                self.bar.set_postfix_str(detail, refresh=False)
            self.bar.update(n)
            return
        if self.done < self.total and (self.last_line is None or now - self.last_line >= self.every):
            self.last_line = now
            self.log.info("%s", self.line(now))

    def line(self, now: Optional[float] = None) -> str:
        """``kNN: 4/10 blocks (40%), 1 m 2 s elapsed, about 1 m 33 s left; detail``."""
        elapsed = (now or time.perf_counter()) - self.started
        share = self.done / self.total if self.total else 1.0
        left = f", about {format_seconds(elapsed / share - elapsed)} left" if 0 < share < 1 else ""
        units = self.unit + ("es" if self.unit.endswith(("sh", "ss", "x")) or self.unit == "batch" else "s")
        return (f"{self.desc}: {self.done}/{self.total} {units} ({share:.0%}), {format_seconds(elapsed)} elapsed"
                f"{left}{f'; {self.detail}' if self.detail else ''}")

    def close(self) -> None:
        """The last line (or the bar's end)."""
        if self.bar is not None:
            self.bar.close()
        else:
            self.log.info("%s", self.line())
