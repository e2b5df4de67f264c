"""The timed sweep over code lengths (and the funnel), within the memory budget.

Every round searches every length in turn, the funnel last, so load that drifts over the minutes
a benchmark takes slows all lengths alike and each length's time in a round can be paired with
the reference length's in the same round. Round 0 is the warm-up: it searches every query and
its results are the ones scored; the timed rounds search the plan's timing sample. When the
plan holds every index they are built once; otherwise each is built before its search in every
round and freed after it (builds are never timed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .funnel import Funnel
from .index import build_index
from .plan import Plan, index_bytes
from .prefix import prefix_codes, prefix_view
from .progress import Progress
from .settings import TimingSettings
from .timing import summarise, time_once

logger = logging.getLogger(__name__)


@dataclass
class Measured:
    """What the sweep measured of one length (or the funnel).

    Attributes:
        info: the index's (or funnel's) info.
        build_seconds: seconds of the first build.
        per_query: per-query metrics of the warm-up round's results.
        timing: :func:`~retrieval.timing.summarise` of the timed rounds.
        split: the funnel only: shortlist and rerank seconds of its fastest timed search.
    """

    info: dict
    build_seconds: float
    per_query: dict
    timing: dict
    split: dict | None = None


def _load(share: float | None) -> str:
    return "" if share is None else f", other processes {100 * share:.0f}% of the CPU"


class _Rounds:
    """Per-run lists of the timed rounds."""

    def __init__(self):
        self.seconds, self.background, self.tries = [], [], []

    def add(self, timed: tuple[float, float | None, int]) -> None:
        self.seconds.append(timed[0])
        self.background.append(timed[1])
        self.tries.append(timed[2])

    def summary(self) -> dict:
        return summarise(self.seconds, self.background, self.tries)


def run_sweep(database, queries: np.ndarray, plan: Plan, options: dict, timing: TimingSettings,
              score, progress: Progress) -> tuple[dict[int, Measured], Measured | None]:
    """Build, search and time every length of ``plan`` (and its funnel).

    Args:
        database: ``[n, k]`` codes (read by row chunks); queries: ``[nq, k]``, all of them
            searched in round 0 (scored), the plan's timing sample in the timed rounds.
        options: :func:`~retrieval.index.build_index` keyword arguments (backend resolved).
        score: ``(D, I) -> per-query metrics``.

    Returns:
        length -> :class:`Measured`, and the funnel's :class:`Measured` (None without a funnel).
    """
    timed = dict(busy_retries=timing.busy_retries, quiet_wait_seconds=timing.quiet_wait_seconds,
                 min_seconds=timing.min_seconds)
    ids = plan.timing_query_ids
    sample = queries if ids is None else np.ascontiguousarray(queries[ids])
    held, rounds, first = {}, {m: _Rounds() for m in plan.lengths}, {}
    funnel_rounds, funnel_first, funnel_held = _Rounds(), None, None
    for r in range(plan.rounds):
        label = "warm-up round" if r == 0 else f"timed round {r} of {plan.rounds - 1}"
        for i, m in enumerate(plan.lengths):
            first.setdefault(m, {})
            _one_length(database, queries if r == 0 else sample, m, plan, options, held, first[m], rounds[m], r,
                        timed, score)
            where = f"sweep {label}, length {m} ({i + 1} of {len(plan.lengths)})"
            if r == 0:
                progress.update(plan.length_units(m, r), "%s: built in %.1f s, mAP@%d %.4f"
                                % (where, first[m]["build_seconds"], plan.R, float(first[m]["per_query"]["ap"].mean())))
            else:
                progress.update(plan.length_units(m, r),
                                f"{where}: {rounds[m].seconds[-1]:.3f} s{_load(rounds[m].background[-1])}")
        if plan.funnel is not None:
            funnel_first, funnel_held = _funnel_round(database, queries if r == 0 else sample, plan, options, held,
                                                      funnel_held, funnel_first, funnel_rounds, r, timed, score)
            detail = (f"mAP@{plan.R} {float(funnel_first['per_query']['ap'].mean()):.4f}" if r == 0 else
                      f"{funnel_rounds.seconds[-1]:.3f} s{_load(funnel_rounds.background[-1])}")
            progress.update(plan.funnel_units(r), f"sweep {label}, funnel {plan.funnel[0]} -> {plan.funnel[1]}: {detail}")
    measured = {m: Measured(first[m]["info"], first[m]["build_seconds"], first[m]["per_query"], rounds[m].summary())
                for m in plan.lengths}
    funnel = None
    if funnel_first is not None:
        splits = funnel_first["splits"]
        fastest = min(splits, key=lambda split: sum(split.values()))
        funnel = Measured(funnel_first["info"], funnel_first["build_seconds"], funnel_first["per_query"],
                          funnel_rounds.summary(), fastest)
    return measured, funnel


def _one_length(database, queries, m, plan, options, held, first, rounds, r, timed, score) -> None:
    """One length in round ``r``: build (unless held), search, score (round 0) or time (later rounds).

    A function of its own so that a rebuilt index is freed when it returns, before the next build.
    """
    index = held.get(m)
    if index is None:
        t0 = time.perf_counter()
        index = build_index(prefix_view(database, m), **options)
        first.setdefault("build_seconds", time.perf_counter() - t0)
        first.setdefault("info", index.info())
        if plan.held:
            held[m] = index

    def run():
        return index.search(prefix_codes(queries, m), plan.R)

    if r == 0:
        first["per_query"] = score(*run())
    else:
        rounds.add(time_once(run, **timed))


def _funnel_round(database, queries, plan, options, held, funnel, first, rounds, r, timed, score):
    """The funnel in round ``r``; returns (its first-round record, the funnel object if held)."""
    short, rerank, shortlist = plan.funnel
    if funnel is None:
        t0 = time.perf_counter()
        if plan.held:  # reuse the sweep's indexes; what they do not hold was planned within the budget
            reference = held.get(rerank)
            left = plan.budget - sum(index_bytes(plan.kind, plan.n, m, plan.options) for m in held)
            funnel = Funnel(database, short_dim=short, rerank_dim=rerank, shortlist_size=shortlist,
                            shortlist_index=held.get(short),
                            rerank_database=None if reference is None else reference.stored_rows(),
                            **{**options, "memory_budget_bytes": max(1, left)})
        else:
            funnel = Funnel(database, short_dim=short, rerank_dim=rerank, shortlist_size=shortlist, **options)
        if first is None:
            first = {"build_seconds": time.perf_counter() - t0, "info": funnel.info(plan.R), "splits": []}
    if r == 0:
        first["per_query"] = score(*funnel.search(queries, plan.R))
    else:
        tries = []

        def run():
            funnel.search(queries, plan.R)
            tries.append(funnel.last_seconds)

        rounds.add(time_once(run, **timed))
        first["splits"].append(min(tries, key=lambda split: sum(split.values())))
    return first, funnel if plan.held else None
