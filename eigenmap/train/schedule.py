"""Schedules: pure functions of the global step (resume needs no scheduler state).

Learning rate: linear warm-up from 0 to the peak, then a half cosine from the peak down to
``final_lr_ratio * peak`` at the last step (DINO's ``cosine_scheduler``, evaluated per step).
NeuralEF's reg weight (``loss.alpha_final``): ``loss.alpha`` up to the step at fraction
``loss.alpha_ramp_start`` of the run (0: the first), then a straight line to ``loss.alpha_final``
at the last step.
"""

from __future__ import annotations

import math

__all__ = ["lr_factor", "alpha_at"]


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """The schedule's multiplier of the peak lr at ``step``, in [0, 1].

    Args:
        step: global optimiser step about to be taken, 0-based (steps past ``total_steps`` stay
            at the floor).
        total_steps: steps of the whole planned run (all epochs), >= 1.
        warmup_steps: linear warm-up steps, 0 <= warmup_steps <= total_steps.
        final_ratio: the cosine ends at ``final_ratio`` times the peak.

    Every param group multiplies its own peak lr by this factor.
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total >= 1")
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # the first step already moves (lr 0 would waste it)
    decay_steps = max(total_steps - warmup_steps - 1, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def alpha_at(step: int, *, total_steps: int, start: float, final: float, ramp_start: float = 0.0) -> float:
    """NeuralEF's reg weight at ``step``: ``start`` until step ``ramp_start * (total_steps - 1)``,
    then a straight line to ``final`` at the last step (``total_steps - 1``) and after it.

    The intent: a small weight early for the representation (the linear probe), a large one late
    for orthogonal, hence ordered, outputs (the prefixes retrieval cuts); a late ``ramp_start``
    keeps the small weight while the learning rate is high. The README's alpha sweep has what
    each ramp measured.
    """
    if total_steps < 1:
        raise ValueError(f"need total_steps >= 1, got {total_steps}")
    if not 0.0 <= ramp_start < 1.0:
        raise ValueError(f"need 0 <= ramp_start < 1, got {ramp_start}")
    last = max(total_steps - 1, 1)
    begin = ramp_start * last
    return start + (final - start) * min(max(step - begin, 0.0) / (last - begin), 1.0)
