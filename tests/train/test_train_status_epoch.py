"""``status.json``'s epoch is counted from 1, as the console counts it."""

from __future__ import annotations

import pytest

from eigenmap.train.checkpoint import TrainerState
from eigenmap.train.schedule import StepPlan
from eigenmap.train.worker import _summary


@pytest.mark.parametrize("state, epoch", [
    (TrainerState(step=25, epoch=2, step_in_epoch=5), 3),  # step 25 of 10-step epochs: the third
    (TrainerState(step=20, epoch=2, step_in_epoch=0), 2),  # the second epoch's last step (the loop moved on)
    (TrainerState(step=3, epoch=0, step_in_epoch=3), 1),
])
def test_the_summary_names_the_epoch_of_the_last_step_counted_from_1(state, epoch):
    summary = _summary("finished", state, StepPlan(10, 25, 3, 0.001), {}, "")
    assert (summary["step"], summary["epoch"]) == (state.step, epoch)
