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
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

__all__ = ["Progress", "clock"]

_log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour): ``75`` -> ``1:15``, ``3723`` -> ``1:02:03``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
    """

    def __init__(self, total: float, desc: str, *, unit: str = "unit", every_seconds: float = 30.0,
                 terminal: Optional[bool] = None, logger: Optional[logging.Logger] = None,
                 seconds_per_unit: Optional[float] = None, counted: bool = True):
        self.total, self.desc, self.unit, self.every = max(total, 0), desc, unit, every_seconds
        self.log, self.rate, self.counted = logger or _log, seconds_per_unit, counted
        self.done, self.detail, self.started = 0, "", time.perf_counter()
        self.last_line: Optional[float] = None
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0)

    def update(self, amount: float = 1, detail: str = "") -> None:
        """``amount`` more work is finished; ``detail`` (e.g. ``"val top-1 61.2"``) goes beside it."""
        self.done += amount
        self.detail = detail or self.detail
        if self.bar is not None:
            if detail:
                self.bar.set_postfix_str(detail, refresh=False)
            self.bar.update(amount)
            return
        now = time.perf_counter()
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
