"""Progress of long work as plain log lines: one line per finished unit, with elapsed time and an
estimate of the time left.

The estimate weighs each unit by its planned work (:mod:`retrieval.plan`): before any unit has
finished it uses the rate measured by the plan's probe, then the rate of the units done so far.
Lines go through ``logging`` (no carriage returns, no terminal codes), so a redirected log reads
like the console.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts planned work done and logs each finished unit.

    Args:
        total_units: the planned work of everything still to come (the plan's units).
        seconds_per_unit: the probe's rate, used until a unit has finished (None: no estimate
            until then).
        log: the logger the lines go to.
    """

    def __init__(self, total_units: float, seconds_per_unit: float | None, log: logging.Logger = logger):
        self.total = float(total_units)
        self.done_units = 0.0
        self.rate = seconds_per_unit
        self.log = log
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left_seconds(self) -> float | None:
        """Estimated seconds until the planned work is done (None when nothing can be said yet)."""
        elapsed = self.elapsed()
        rate = elapsed / self.done_units if self.done_units > 0 and elapsed > 0 else self.rate
        return None if rate is None else max(0.0, self.total - self.done_units) * rate

    def done(self, units: float, message: str, *args) -> None:
        """Count ``units`` of planned work as done and log ``message % args`` with the times."""
        self.done_units += units
        left = self.left_seconds()
        eta = "" if left is None else f", about {clock(left)} left"
        self.log.info(message + " | elapsed %s%s", *args, clock(self.elapsed()), eta)
