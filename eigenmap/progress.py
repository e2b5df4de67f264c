"""Progress of long work (feature extraction, kNN blocks, probe epochs), readable both on a
terminal and in a redirected log.

On a terminal: a tqdm bar, the latest detail beside it. Otherwise (a log file, a scheduler's
output): plain ``logging`` lines, no carriage returns or escape codes (a bar in a log file is one
line of thousands of ``\\r``): one after the first unit, so the estimate shows early, then at
most one every ``every_seconds``, and one at the end, each with the count, the elapsed time, an
estimate of the time left and the latest detail.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

__all__ = ["Progress", "format_seconds"]

_log = logging.getLogger("eigenmap.progress")


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1 m 15 s``; ``4000`` -> ``1 h 6 m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} m"


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
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int = 1, detail: str = "") -> None:
        """``n`` more units are finished; ``detail`` (e.g. ``"val top-1 61.2"``) goes beside the count."""
        self.done += n
        self.detail = detail or self.detail
        if self.bar is not None:
            if detail:
                self.bar.set_postfix_str(detail, refresh=False)
            self.bar.update(n)
            return
        now = time.perf_counter()
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
