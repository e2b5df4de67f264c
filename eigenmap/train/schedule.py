"""Schedules: pure functions of the global step (resume needs no scheduler state), and the plan.

Learning rate: linear warm-up from 0 to the peak, then a half cosine from the peak down to
``final_lr_ratio * peak`` at the last step (DINO's ``cosine_scheduler``, evaluated per step).
Weight decay (``optim.weight_decay_final``): a half cosine from ``optim.weight_decay`` to it.
NeuralEF's reg weight (``loss.alpha_final``): ``loss.alpha`` up to the step at fraction
``loss.alpha_ramp_start`` of the run (0: the first), then a straight line to ``loss.alpha_final``
at the last step.

Both span the planned run, :class:`StepPlan`: ``derived.total_steps`` (``train.max_steps`` when
set, as in Hugging Face's Trainer, else all epochs) and ``derived.warmup_steps``, which
:func:`eigenmap.train.checks.prepare_train_config` works out from the training set before any
worker starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from eigenmap.config import Config, LossConfig

__all__ = ["lr_factor", "cosine_between", "alpha_at", "AlphaSchedule", "StepPlan", "plan_in_words", "plural"]


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """The schedule's multiplier of the peak lr at ``step``, in [0, 1].

    Args:
        step: global optimiser step about to be taken, 0-based (steps past ``total_steps`` stay
            at the floor).
        total_steps: steps of the whole planned run, >= 1.
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


def cosine_between(step: int, *, total_steps: int, start: float, end: float) -> float:
    """A half cosine from ``start`` at step 0 to ``end`` at the last step (``total_steps - 1``) and
    after it: DINO's weight-decay schedule (``cosine_scheduler(wd, wd_end, ...)``, no warm-up)."""
    if total_steps < 1:
        raise ValueError(f"need total_steps >= 1, got {total_steps}")
    progress = min(step / max(total_steps - 1, 1), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


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


@dataclass(frozen=True)
class AlphaSchedule:
    """NeuralEF's reg weight as a pure function of the global step: ``schedule(step) -> float``.

    Constant (``loss.alpha``) unless ``final`` is set (``loss.alpha_final``); then the ramp of
    :func:`alpha_at` over ``total_steps`` (the planned run, ``derived.total_steps``).
    """

    start: float
    final: Optional[float] = None
    ramp_start: float = 0.0
    total_steps: Optional[int] = None

    @classmethod
    def of(cls, loss: LossConfig, total_steps: Optional[int]) -> "AlphaSchedule":
        return cls(loss.alpha, loss.alpha_final, loss.alpha_ramp_start, total_steps)

    def __call__(self, step: Optional[int]) -> float:
        """The weight at global step ``step`` (0-based); a ramp needs the step and the plan."""
        if self.final is None:
            return self.start
        if step is None:
            raise ValueError("loss.alpha_final ramps alpha with the step: pass the global step to the forward")
        if self.total_steps is None:
            raise ValueError("loss.alpha_final ramps alpha over the planned run, but derived.total_steps is null: "
                             "load the config with eigenmap.train.checks.load_train_config, which plans the run "
                             "from its training data")
        return alpha_at(step, total_steps=self.total_steps, start=self.start, final=self.final,
                        ramp_start=self.ramp_start)


@dataclass(frozen=True)
class StepPlan:
    """How long the run is, in optimiser steps, and the lr schedule over it (the resolved
    config's ``derived`` section, read once)."""

    steps_per_epoch: int
    total_steps: int  # derived.total_steps: train.max_steps, else train.epochs x steps_per_epoch
    warmup_steps: int
    final_lr_ratio: float
    weight_decay: float = 0.0
    weight_decay_final: Optional[float] = None  # optim.weight_decay_final: a cosine to it, else constant

    @classmethod
    def of(cls, cfg: Config) -> "StepPlan":
        """The plan in ``cfg.derived``.

        Raises:
            ValueError: the config was not planned (see :func:`~eigenmap.train.checks.prepare_train_config`).
        """
        d = cfg.derived
        if None in (d.steps_per_epoch, d.total_steps, d.warmup_steps):
            raise ValueError("the config has no plan (derived.steps_per_epoch, total_steps, warmup_steps are null): "
                             "load it with eigenmap.train.checks.load_train_config or prepare_train_config")
        return cls(d.steps_per_epoch, d.total_steps, d.warmup_steps, cfg.optim.final_lr_ratio,
                   cfg.optim.weight_decay, cfg.optim.weight_decay_final)

    @property
    def epochs(self) -> int:
        """Epochs the plan starts (the last one may be partial)."""
        return -(-self.total_steps // self.steps_per_epoch)

    def lr_factor(self, step: int) -> float:
        return lr_factor(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                         final_ratio=self.final_lr_ratio)

    def weight_decay_at(self, step: int) -> Optional[float]:
        """The scheduled weight decay at ``step``, or None when it is constant (set once)."""
        if self.weight_decay_final is None:
            return None
        return cosine_between(step, total_steps=self.total_steps, start=self.weight_decay, end=self.weight_decay_final)


def plural(count: float, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``0.32 epochs``."""
    shown = f"{count:,}" if isinstance(count, int) else f"{count:.3g}"
    return f"{shown} {noun}" + ("" if count == 1 else "s")


def plan_in_words(cfg: Config) -> str:
    """The run's plan as a sentence (``eigenmap config`` and the run report), e.g. "150 optimiser
    steps (train.max_steps; 0.32 epochs of 468 steps ...); linear warm-up over 15 steps to the peak
    lr 0.15, then a cosine to 0.00015 (0.001 x the peak) at the last step"."""
    d, plan = cfg.derived, StepPlan.of(cfg)
    if cfg.train.max_steps is not None:
        length = f"train.max_steps; {plural(plan.total_steps / plan.steps_per_epoch, 'epoch')}"
    else:
        length = f"train.epochs: {plural(cfg.train.epochs, 'epoch')}"
    images = f", {d.train_images:,} images" if d.train_images is not None else ""
    peak, loss = d.lr, cfg.loss
    words = (f"{plural(plan.total_steps, 'optimiser step')} ({length} of {plural(plan.steps_per_epoch, 'step')}"
             f"{images} at a global batch of {d.global_batch_size}); linear warm-up over "
             f"{plural(plan.warmup_steps, 'step')} to the peak lr {peak:.4g}, then a cosine to "
             f"{peak * plan.final_lr_ratio:.4g} ({plan.final_lr_ratio:g} x the peak) at the last step")
    if loss.name == "neuralef" and loss.alpha_final is not None:
        begin = round(loss.alpha_ramp_start * (plan.total_steps - 1))
        held = f"{loss.alpha:g} until step {begin}, then" if begin > 0 else f"{loss.alpha:g} at the first step,"
        words += f"; NeuralEF's alpha {held} linearly to {loss.alpha_final:g} at the last step"
    return words
