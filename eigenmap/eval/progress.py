"""Progress of long evaluation loops as plain log lines with an ETA.

One ``logging`` line per report, no carriage returns or colour codes, so a redirected log reads
as it was written (a progress bar in a log file is one line of thousands of ``\\r``). Reports
come at most every ``interval_seconds`` (and always for the first and the last unit), so a
loop of many quick units does not flood the log.
"""

from __future__ import annotations

import datetime
import logging
import time

__all__ = ["ProgressLog", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``3725.2`` -> ``'1:02:05'`` (h:mm:ss, rounded to the second)."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class ProgressLog:
    """Logs ``"<what> <done>/<total> (<pct>%), <elapsed> elapsed, ETA <remaining>[; <detail>]"``.

    Args:
        logger: where the lines go (at INFO).
        what: the loop's name, e.g. ``"kNN block"`` or ``"probe epoch"``.
        total: units in the loop.
        interval_seconds: least time between two lines (the first and last unit always log).
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, interval_seconds: float = 10.0):
        self.logger, self.what, self.total = logger, what, max(int(total), 1)
        self.interval_seconds = interval_seconds
        self.started = time.perf_counter()
        self.last_line = None

    def update(self, done: int, detail: str = "") -> None:
        """``done`` units of ``total`` are finished; ``detail`` is appended to the line."""
        now = time.perf_counter()
        due = self.last_line is None or done >= self.total or now - self.last_line >= self.interval_seconds
        if not due or not self.logger.isEnabledFor(logging.INFO):
            return
        self.last_line = now
        elapsed = now - self.started
        eta = elapsed / max(done, 1) * (self.total - done)
        line = (f"{self.what} {done}/{self.total} ({100 * done / self.total:.0f}%), {format_seconds(elapsed)} "
                f"elapsed, ETA {format_seconds(eta)}")
        self.logger.info(line + (f"; {detail}" if detail else ""))
