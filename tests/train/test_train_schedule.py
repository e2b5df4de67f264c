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


def test_the_objective_takes_the_ramp_and_its_start_from_the_config_and_returns_the_weight_it_used():
    import torch

    from eigenmap.config import from_dict, resolve
    from eigenmap.losses import build_loss

    cfg = resolve(from_dict({"train": {"epochs": 2}, "loss": {"alpha": 0.01, "alpha_final": 0.21,
                                                              "alpha_ramp_start": 0.5}}), steps_per_epoch=6)
    assert cfg.derived.total_steps == 12  # the ramp starts at step 5.5
    objective = build_loss(cfg.loss, 4, total_steps=cfg.derived.total_steps)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)

    def alpha(step: int) -> float:
        terms = objective(z1, z2, step)
        assert terms.total.item() == pytest.approx((terms.loss + terms.alpha * terms.reg).item())
        return terms.alpha.item()

    assert [alpha(s) for s in (0, 5, 11, 20)] == pytest.approx([0.01, 0.01, 0.21, 0.21])
    assert alpha(8) == pytest.approx(0.01 + 0.2 * 2.5 / 5.5)
    constant = build_loss(from_dict({}).loss, 4)  # no ramp: loss.alpha at every step, no plan needed
    assert constant(z1, z2, 7).alpha.item() == pytest.approx(0.0025)
    assert constant(z1, z2).alpha.item() == pytest.approx(0.0025)


def test_a_ramp_needs_the_step_and_the_plan_and_says_so():
    import torch

    from eigenmap.config import from_dict
    from eigenmap.losses import build_loss

    loss_cfg = from_dict({"loss": {"alpha_final": 0.1}}).loss
    z = torch.randn(8, 4)
    with pytest.raises(ValueError, match="derived.total_steps is null"):
        build_loss(loss_cfg, 4)(z, z, 3)
    with pytest.raises(ValueError, match="pass the global step"):
        build_loss(loss_cfg, 4, total_steps=10)(z, z)


def _planned(**sections):
    from eigenmap.config import from_dict, resolve

    return resolve(from_dict(sections), steps_per_epoch=50).derived


def test_without_max_steps_the_plan_is_every_epoch_and_the_warmup_its_epochs():
    d = _planned(train={"epochs": 100}, optim={"warmup_epochs": 10})
    assert (d.steps_per_epoch, d.total_steps, d.warmup_steps) == (50, 5000, 500)


def test_max_steps_is_the_planned_length_and_the_warmup_keeps_its_share_of_the_run():
    d = _planned(train={"epochs": 100, "max_steps": 150}, optim={"warmup_epochs": 10})
    assert (d.total_steps, d.warmup_steps) == (150, 15)
    longer = _planned(train={"epochs": 2, "max_steps": 400}, optim={"warmup_epochs": 1})  # past the epochs too
    assert (longer.total_steps, longer.warmup_steps) == (400, 200)


def test_the_warmup_never_exceeds_the_plan():
    assert _planned(train={"epochs": 2}, optim={"warmup_epochs": 5}).warmup_steps == 100
    assert _planned(train={"epochs": 2, "max_steps": 10}, optim={"warmup_epochs": 5}).warmup_steps == 10


def test_the_step_plan_reads_the_derived_plan_and_refuses_a_config_without_one():
    from eigenmap.config import from_dict, resolve
    from eigenmap.train.schedule import StepPlan

    cfg = resolve(from_dict({"train": {"epochs": 3, "max_steps": 120}, "optim": {"warmup_epochs": 1}}),
                  steps_per_epoch=50)
    plan = StepPlan.of(cfg)
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps, plan.epochs) == (50, 120, 40, 3)
    assert plan.lr_factor(119) == pytest.approx(cfg.optim.final_lr_ratio)
    with pytest.raises(ValueError, match="load_train_config"):
        StepPlan.of(resolve(from_dict({})))


def test_the_plan_in_words_names_where_alpha_starts_and_the_report_gives_the_warmup_in_steps():
    from eigenmap.config import from_dict, resolve
    from eigenmap.train.schedule import plan_in_words
    from launch.report import _config_summary

    def planned(ramp_start: float):
        return resolve(from_dict({"train": {"epochs": 100, "max_steps": 150}, "optim": {"warmup_epochs": 10},
                                  "loss": {"alpha": 0.04, "alpha_final": 0.16, "alpha_ramp_start": ramp_start}}),
                       steps_per_epoch=50)

    assert "alpha 0.04 at the first step, linearly to 0.16 at the last step" in plan_in_words(planned(0.0))
    assert "alpha 0.04 until step 74, then linearly to 0.16" in plan_in_words(planned(0.5))  # 0.5 x 149
    optimiser = next(row for row in _config_summary(planned(0.0)) if row.startswith("| optimiser"))
    assert "linear warm-up over 15 steps" in optimiser and "epoch" not in optimiser  # 10 of 100 epochs' share of 150
