"""Progress of long work, readable both on a terminal and in a redirected log.

On a terminal: a tqdm bar. Otherwise (a log file, a scheduler's output): one plain line at most
every ``every_seconds`` and one at the end, with the count, the elapsed time and an estimate of
the time left; no carriage returns, no escape codes.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

__all__ = ["Progress", "format_seconds"]

log = logging.getLogger("eigenmap.progress")


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1 m 15 s``; ``4000`` -> ``1 h 6 m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} m"


class Progress:
    """``update(n)`` after each unit of work of a loop of ``total`` units; ``close()`` at the end."""

    def __init__(self, total: int, desc: str, *, unit: str = "batch", every_seconds: float = 30.0,
                 terminal: Optional[bool] = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every_seconds
        self.done, self.started = 0, time.perf_counter()
        self.last_line = self.started
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.every and self.done < self.total:
            self.last_line = now
            log.info("%s", self.line(now))

    def line(self, now: Optional[float] = None) -> str:
        """``desc: 40/100 batches (40%), 1 m 2 s elapsed, about 1 m 33 s left``."""
        elapsed = (now or time.perf_counter()) - self.started
        share = self.done / self.total if self.total else 1.0
        left = f", about {format_seconds(elapsed / share - elapsed)} left" if 0 < share < 1 else ""
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{'es' if self.unit.endswith('h') else 's'} "
                f"({share:.0%}), {format_seconds(elapsed)} elapsed{left}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            log.info("%s", self.line())
