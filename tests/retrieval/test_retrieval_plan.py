"""The plan of a benchmark run: indexes held only when they fit the budget, baselines chosen
within their cost bound, deterministic; the settings groups refuse bad values by name; progress
lines are plain and carry an estimate of the time left."""

from __future__ import annotations

import logging

import pytest

from retrieval import BaselineSettings, FunnelSettings, SearchSettings, TimingSettings, parse_bytes
from retrieval.plan import BASELINE_FLOOR_UNITS, make_plan
from retrieval.progress import Progress, clock


def _every_power_of_two(k: int) -> list[int]:
    """1, 2, 4, ..., k: the plans below are sized on every length from 1 (retrieve's default starts at 4)."""
    return [1 << i for i in range(k.bit_length())]


def _plan(n=200_000, nq=1_000, k=2048, budget=4 << 30, baselines=BaselineSettings(), funnel=(128, 2048, None),
          repeats=3, timing_sample=TimingSettings().query_sample):
    return make_plan(n=n, nq=nq, k=k, R=100, lengths=_every_power_of_two(k), kind="flat", options={}, budget=budget,
                     repeats=repeats, funnel=funnel, baselines=baselines, seed=0, timing_sample=timing_sample)


def test_indexes_are_held_only_when_all_of_them_fit_the_budget_together():
    held = _plan()
    assert held.held and held.held_bytes == 4 * 200_000 * (2 * 2048 - 1) <= 4 << 30
    tight = _plan(budget=3 << 30)  # each length fits alone, all twelve together do not
    assert not tight.held and tight.held_bytes == 0
    # the funnel's lengths count when the sweep does not hold them
    sizes = 4 * 1000 * 63
    assert make_plan(n=1000, nq=10, k=64, R=10, lengths=[64], kind="flat", options={}, budget=4 * 1000 * 64 + 100,
                     repeats=1, funnel=(4, 64, None), baselines=None, seed=0).held is False
    assert make_plan(n=1000, nq=10, k=64, R=10, lengths=[4, 64], kind="flat", options={}, budget=sizes + 4 * 1000 * 5,
                     repeats=1, funnel=(4, 64, None), baselines=None, seed=0).held is True


def test_auto_baselines_keep_the_whole_benchmark_within_its_bound_of_a_plain_sweep_deterministically():
    # 10,000 queries over 200,000 x 2,048: the timed rounds search a seeded sample of 1,000
    plan = _plan(nq=10_000)
    assert plan.timing_queries == 1000 and len(plan.timing_query_ids) == 1000
    assert plan.total_units() <= 2.5 * plan.plain_units()  # the default bound, sweep and baselines together
    assert plan.sweep_units() < 1.5 * plan.plain_units()  # timing a sample costs a fraction of the scoring
    assert plan.baseline_dims == _every_power_of_two(2048)  # the bound leaves room for every length here
    assert plan.baseline_queries == 1000 and len(plan.baseline_query_ids) == 1000
    assert sorted(set(plan.baseline_query_ids)) == list(plan.baseline_query_ids)
    assert set(plan.baseline_query_ids) != set(plan.timing_query_ids)  # two seeded streams
    assert "2.5x a plain sweep" in plan.baseline_choice and "sample of 1000 of the 10000 queries" in plan.baseline_choice
    again = _plan(nq=10_000)
    assert again.baseline_dims == plan.baseline_dims and again.pca_fit_rows == plan.pca_fit_rows
    assert (again.timing_query_ids == plan.timing_query_ids).all()
    # 1,000 queries: all of them timed and scored; the sweep alone is over 2.5 plain sweeps, so the
    # baselines get their fixed allowance, at the shortest lengths first
    small = _plan()
    assert small.timing_query_ids is None and small.baseline_query_ids is None
    assert small.baseline_dims == _every_power_of_two(2048)[: len(small.baseline_dims)]
    assert 0 < len(small.baseline_dims) < 12 and small.baseline_units() <= BASELINE_FLOOR_UNITS
    # fewer queries still: the PCA is fitted on fewer rows, never under 10 rows per dimension;
    # when even that fit would take over half the allowance PCA is left out
    fewer = _plan(nq=100)
    assert fewer.pca and 10 * 2048 <= fewer.pca_fit_rows < 200_000 and "PCA fitted on" in fewer.baseline_choice
    few = _plan(n=20_000, nq=20, k=8192, funnel=(512, 8192, None))  # an 8,192 x 8,192 eigendecomposition
    assert not few.pca and few.pca_fit_rows == 0 and "PCA left out" in few.baseline_choice
    assert few.baseline_dims[:3] == [1, 2, 4]
    for p in (fewer, few):
        assert p.baseline_units() <= max(2.5 * p.plain_units() - p.sweep_units(), BASELINE_FLOOR_UNITS)


def test_an_imagenet_sized_default_plan_stays_within_the_bound_with_indexes_rebuilt_per_round():
    plan = _plan(n=1_281_167, nq=10_000)
    assert not plan.held  # twelve 1.28M-row indexes do not fit 4 GiB together
    assert plan.total_units() <= 2.5 * plan.plain_units()
    assert len(plan.baseline_dims) >= 8
    assert plan.as_dict()["total_to_plain_sweep_units"] == pytest.approx(plan.total_units() / plan.plain_units())


def test_asked_baseline_lengths_are_kept_and_checked():
    assert _plan(baselines=BaselineSettings(dims="all")).baseline_dims == _every_power_of_two(2048)
    assert _plan(baselines=BaselineSettings(dims=[512, 8])).baseline_dims == [8, 512]
    with pytest.raises(ValueError, match=r"baseline dims \[7\] are not among the benchmarked lengths"):
        _plan(baselines=BaselineSettings(dims=[7, 8]))


def test_the_plan_says_what_it_will_do():
    plan = _plan(budget=3 << 30)
    plan.seconds_per_unit = 3e-11
    text = plan.describe()
    assert "lengths 1, 2, 4" in text and "rebuilt in every round" in text and "paired per round" in text
    assert "funnel: shortlist 200 with 128 dims, rerank with 2048" in text
    assert "random subsets and PCA" in text and "estimated time" in text and "x the planned work of a plain sweep" in text
    assert "1 scored round on every query + 3 timed rounds on every query" in text
    assert "3 timed rounds on a seeded sample of 1000 of the 10000 queries" in _plan(nq=10_000).describe()
    assert plan.as_dict()["estimated_seconds"]["total"] == pytest.approx(plan.total_units() * 3e-11)
    assert "baselines: off" in _plan(baselines=None).describe()


@pytest.mark.parametrize("make, match", [
    (lambda: SearchSettings(index="ivfpq"), "index must be one of flat, ivf, hnsw"),
    (lambda: SearchSettings(backend="gpu"), "backend must be one of auto, faiss-cpu"),
    (lambda: SearchSettings(memory_budget_bytes=-1), "memory_budget_bytes must be a positive integer"),
    (lambda: SearchSettings(index_options={"nprobes": 4}), "unknown index_options nprobes; accepted: nlist"),
    (lambda: TimingSettings(repeats=0), "repeats must be a positive integer"),
    (lambda: TimingSettings(query_sample=0), "timing query_sample must be a positive integer"),
    (lambda: TimingSettings(busy_retries=-1), "busy_retries must be an integer >= 0"),
    (lambda: FunnelSettings(short_dim=0), "funnel short_dim must be a positive integer"),
    (lambda: BaselineSettings(dims="some"), "baseline dims must be 'auto', 'all' or a list"),
    (lambda: BaselineSettings(query_sample=0), "baseline query_sample must be a positive integer"),
    (lambda: BaselineSettings(cost_ratio=0), "baseline cost_ratio must be a number > 0"),
])
def test_bad_settings_are_named_when_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_memory_sizes_read_with_their_units():
    assert parse_bytes("4GiB") == 4 << 30 and parse_bytes("512MiB") == 512 << 20 and parse_bytes("2.5G") == 2_500_000_000
    assert parse_bytes("1000") == 1000 and parse_bytes("8gb") == 8_000_000_000 and parse_bytes("64 KiB") == 65536
    for bad in ("4 GiB of it", "-1G", "0", "lots"):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)


def test_planned_work_progress_logs_every_unit_with_the_share_done_and_the_probes_rate_first(caplog):
    log = logging.getLogger("test.progress")
    progress = Progress(10, "retrieval", every_seconds=0, terminal=False, logger=log, seconds_per_unit=2.0,
                        counted=False)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.update(0, "starting")
        progress.update(5, "half of it: 5")
        progress.update(5, "the rest")
    first, second, third = (r.getMessage() for r in caplog.records)
    assert first == "retrieval: 0%, 0:00 elapsed, about 0:20 left; starting"  # the probe's rate: 10 units x 2 s
    assert second.startswith("retrieval: 50%, ") and "left" in second and second.endswith("; half of it: 5")
    assert third.startswith("retrieval: 100%, ") and "left" not in third  # the last unit is logged too
    assert "\r" not in first + second and "\x1b" not in first + second
    assert clock(59) == "0:59" and clock(3723) == "1:02:03"
