"""Every collective of the project lives here.

The helpers work with and without an initialised process group: without one they behave as a
world of size 1, so the same code runs as one plain process, under torchrun or under Ray Train.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_dist",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "gather",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
]


def is_dist() -> bool:
    """True when a default process group exists and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather with a backward that sums the gathered gradient over ranks.

    Every rank computes the same loss on the whole gathered batch. Backward all-reduces (sums)
    the gradient of the gathered tensor and returns this rank's slice, i.e. W times the
    single-process gradient of that slice; the engine's average of parameter gradients over the
    W ranks then gives exactly the single-process gradient on the concatenated batch. A plain
    all_gather has no backward at all, and one that keeps only the local gradient comes out
    scaled by 1/W after that average (the bug of lightly #1977).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.batch = x.shape[0]
        ctx.rank = dist.get_rank()
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients.

    Args:
        x: [B, ...] on this rank (same B on every rank).

    Returns:
        [W*B, ...], rank r's rows at [r*B:(r+1)*B]; ``x`` itself when not distributed.
        Every rank must pass the same shape (the training loaders drop the last partial
        batch); checking it here would cost an extra collective on every step.
    """
    if not is_dist():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (no gradient); ``x`` when not distributed."""
    if not is_dist():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (no gradient); ``x`` when not distributed."""
    return all_reduce_sum(x) / get_world_size()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
