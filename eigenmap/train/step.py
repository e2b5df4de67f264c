"""One training step, shared by the worker loop and the benchmarks' bare loop.

``engine`` is a DeepSpeed engine or the benchmarks' ``PlainEngine`` (``tools/plain_engine.py``):
both take the model's forward, ``backward(loss)`` and ``step()``. The views arrive augmented (see
:mod:`eigenmap.data.prefetch`), so the step is only forward -> backward -> optimiser step.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["train_step"]


def train_step(engine: Any, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor,
               step: int) -> dict[str, torch.Tensor]:
    """Forward both views in ONE batch, backward the objective, take the optimiser step.

    Args:
        engine: DeepSpeed engine or ``tools/plain_engine.py``'s PlainEngine around an :class:`~eigenmap.models.EigenmapModel`.
        x1, x2: [B, 3, H, W] float augmented views (the memory format the model wants).
        labels: [B] int64, for the online monitoring classifier.
        step: the global optimiser step being taken (0-based): the objective's scheduled
            weights (NeuralEF's alpha ramp) are evaluated at it.

    Returns:
        The model's 0-dim terms ("total", "objective", "loss", "reg", "alpha" where the
        objective has one, "cls_loss", "acc"), still on the device: nothing here reads them
        back (no host synchronisation).
    """
    out = engine(torch.cat([x1, x2]), labels, step)  # one pass: BatchNorm sees both views, convs run once
    engine.backward(out["total"])
    engine.step()
    return out
