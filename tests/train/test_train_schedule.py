"""Learning-rate schedule: linear warm-up, cosine to the floor, a pure function of the step."""

from __future__ import annotations

import math

import pytest

from eigenmap.train.schedule import alpha_at, lr_factor


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, peak: float, final_ratio: float) -> float:
    """The learning rate of a param group whose peak is ``peak``, as the optimiser sets it."""
    return peak * lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps, final_ratio=final_ratio)


def test_warmup_is_linear_and_reaches_the_peak():
    lrs = [warmup_cosine(s, total_steps=100, warmup_steps=10, peak=2.4, final_ratio=0.001) for s in range(10)]
    assert lrs[0] == pytest.approx(0.24)
    assert lrs[9] == pytest.approx(2.4)
    assert all(b - a == pytest.approx(0.24) for a, b in zip(lrs, lrs[1:]))


def test_cosine_decays_monotonically_to_the_floor():
    lrs = [warmup_cosine(s, total_steps=100, warmup_steps=10, peak=2.4, final_ratio=0.001) for s in range(10, 100)]
    assert lrs[0] == pytest.approx(2.4)
    assert lrs[-1] == pytest.approx(2.4 * 0.001)
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    mid = 10 + (100 - 10 - 1) / 2  # half-way through the decay: the mean of peak and floor
    assert lr_factor(math.floor(mid), total_steps=100, warmup_steps=10, final_ratio=0.0) == pytest.approx(0.5, abs=0.02)


def test_no_warmup_and_steps_past_the_end_stay_at_the_floor():
    assert lr_factor(0, total_steps=10, warmup_steps=0, final_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(50, total_steps=10, warmup_steps=0, final_ratio=0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("total,warmup", [(0, 0), (10, 11), (10, -1)])
def test_bad_lengths_are_rejected(total, warmup):
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_factor(0, total_steps=total, warmup_steps=warmup, final_ratio=0.0)


def test_alpha_ramp_is_linear_from_start_at_step_0_to_final_at_the_last_step():
    alphas = [alpha_at(s, total_steps=11, start=0.01, final=0.11) for s in range(11)]
    assert alphas == pytest.approx([0.01 + 0.01 * s for s in range(11)])
    assert alpha_at(50, total_steps=11, start=0.01, final=0.11) == pytest.approx(0.11)
    assert alpha_at(0, total_steps=1, start=0.01, final=0.11) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="total_steps"):
        alpha_at(0, total_steps=0, start=0.01, final=0.11)


def test_a_late_ramp_start_holds_alpha_until_that_fraction_of_the_run_then_ramps_to_final_at_the_last_step():
    alphas = [alpha_at(s, total_steps=11, start=0.01, final=0.21, ramp_start=0.6) for s in range(11)]
    assert alphas == pytest.approx([0.01] * 7 + [0.06, 0.11, 0.16, 0.21])
    assert alpha_at(50, total_steps=11, start=0.01, final=0.21, ramp_start=0.6) == pytest.approx(0.21)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ramp_start"):
            alpha_at(0, total_steps=11, start=0.01, final=0.21, ramp_start=bad)


def test_the_worker_step_plan_takes_the_ramp_and_its_start_from_the_config():
    from eigenmap.config import from_dict
    from eigenmap.train.worker import StepPlan

    cfg = from_dict({"train": {"epochs": 2}, "loss": {"alpha": 0.01, "alpha_final": 0.21, "alpha_ramp_start": 0.5}})
    plan = StepPlan.of(cfg, steps_per_epoch=6)  # 12 planned steps: the ramp starts at step 5.5
    assert [plan.alpha(s) for s in (0, 5, 11, 20)] == pytest.approx([0.01, 0.01, 0.21, 0.21])
    assert plan.alpha(8) == pytest.approx(0.01 + 0.2 * 2.5 / 5.5)
    assert StepPlan.of(from_dict({}), steps_per_epoch=6).alpha_ramp is None
