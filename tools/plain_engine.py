"""A bare model and optimiser behind the DeepSpeed engine's step interface: the bare loop
``tools/bench_step.py`` compares the worker loop with (only the benchmarks use it)."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn as nn

__all__ = ["PlainEngine"]


class PlainEngine:
    """A bare model and optimiser behind the DeepSpeed engine's step interface.

    ``engine(x, labels, step)`` (forward under autocast for bf16/fp16), ``engine.backward(loss)``
    (scaled for fp16) and ``engine.step()`` (optimiser step, then gradients set to None), and
    ``engine.module``: so :func:`eigenmap.train.step.train_step` runs unchanged without a
    process group or DeepSpeed. This is the bare loop ``tools/bench_step.py`` compares the
    worker loop with.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: str):
        self.module, self.optimizer = model, optimizer
        self.device_type = next(model.parameters()).device.type
        self.dtype: Optional[torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # loss scaling only for fp16: bf16 has fp32's exponent range
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None

    def __call__(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 step: Optional[int] = None) -> dict[str, torch.Tensor]:
        autocast = (torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            return self.module(x, labels, step)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the gradients until the next backward

    def train(self) -> None:
        self.module.train()
