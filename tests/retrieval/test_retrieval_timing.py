"""Interleaved timing: warm-up rounds are not recorded, every run is timed once per round."""

from __future__ import annotations

import time

import pytest

from retrieval.timing import time_interleaved, timed_run, wait_for_quiet


def test_rounds_interleave_and_the_warm_up_is_not_recorded():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.01))}
    out = time_interleaved(runs, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, a and b in turn
    for name in runs:
        rec = out[name]
        assert len(rec["seconds"]) == len(rec["background_cpu"]) == len(rec["tries"]) == 3
        assert rec["best_seconds"] == min(rec["seconds"]) <= rec["median_seconds"]
    assert out["b"]["best_seconds"] >= 0.01 > out["a"]["best_seconds"]


def test_a_short_run_reports_no_background_share_and_waiting_can_give_up():
    seconds, other = timed_run(lambda: None)
    assert seconds >= 0 and other is None  # far below the 1/100 s tick of /proc/stat
    t0 = time.monotonic()
    assert wait_for_quiet(0.0, busy_share=0.1) is False and time.monotonic() - t0 < 0.5


def test_a_timed_run_repeats_a_short_call_for_its_minimum_duration_and_gives_the_seconds_of_one_call():
    calls = []
    t0 = time.perf_counter()
    seconds, _ = timed_run(lambda: (calls.append(1), time.sleep(0.01)), min_seconds=0.2)
    wall = time.perf_counter() - t0
    assert wall >= 0.2 and len(calls) >= 10  # back to back until the minimum passed
    assert seconds == pytest.approx(wall / len(calls), rel=0.2) and 0.01 <= seconds < 0.05
    out = time_interleaved({"a": lambda: time.sleep(0.005)}, repeats=2, warmup=0, min_seconds=0.05)
    assert all(0.005 <= s < 0.02 for s in out["a"]["seconds"])  # each round: one call's seconds
