"""Interleaved timing: warm-up rounds are not recorded, every run is timed once per round."""

from __future__ import annotations

import time

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
