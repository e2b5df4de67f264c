"""Which images each worker reads, in which order: pure functions of (seed, epoch, rank).

Training: one permutation of the whole dataset per (seed, epoch), the same on every worker;
worker ``rank`` takes every ``world_size``-th element of it (``perm[rank::world_size]``). The
shards are disjoint and together cover the permutation. With ``drop_last`` every worker gets
the same number of full batches, ``(N // world_size) // batch_size``; the few images left over
differ from epoch to epoch because the permutation does. Resuming at ``start_step`` drops the
first ``start_step * batch_size`` indices of the shard: nothing is decoded to skip them.

Evaluation: contiguous, unpadded blocks (:func:`eval_shard`), so every image is seen exactly
once across workers and concatenating the workers' outputs in rank order gives dataset order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["epoch_permutation", "train_shard", "steps_per_epoch", "eval_shard"]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size {world_size} must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, {world_size})")


def epoch_permutation(num_samples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The dataset order of one epoch.

    Returns:
        ``[num_samples]`` int64 permutation; a pure function of ``(seed, epoch)``: numpy's
        SeedSequence mixes both, so neighbouring seeds or epochs give unrelated orders.
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed ({seed}) and epoch ({epoch}) must be >= 0")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(num_samples).astype(np.int64)


def steps_per_epoch(num_samples: int, *, world_size: int, batch_size: int) -> int:
    """Full batches per worker per epoch (the same on every worker)."""
    return (num_samples // world_size) // batch_size


def train_shard(
    num_samples: int,
    *,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    batch_size: int,
    start_step: int = 0,
    drop_last: bool = True,
) -> np.ndarray:
    """The indices worker ``rank`` reads in epoch ``epoch``, in order.

    Args:
        num_samples: images in the dataset.
        rank, world_size: this worker and the number of workers.
        seed, epoch: the order is a pure function of these.
        batch_size: images per worker per step.
        start_step: skip this many batches (resume inside an epoch).
        drop_last: truncate to whole batches, equal on every worker (training). Without it the
            shards differ in length by at most one and their union is the whole dataset.

    Returns:
        ``[n]`` int64 dataset indices; ``n`` is ``(steps - start_step) * batch_size`` with
        ``drop_last``.
    """
    _check_rank(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be >= 1")
    if start_step < 0:
        raise ValueError(f"start_step {start_step} must be >= 0")
    perm = epoch_permutation(num_samples, seed=seed, epoch=epoch)
    if not drop_last:
        return perm[rank::world_size][start_step * batch_size:]
    steps = steps_per_epoch(num_samples, world_size=world_size, batch_size=batch_size)
    if start_step > steps:
        raise ValueError(f"start_step {start_step} is past the end of the epoch ({steps} steps)")
    shard = perm[rank::world_size][: steps * batch_size]
    return shard[start_step * batch_size:]


def eval_shard(num_samples: int, *, rank: int, world_size: int) -> np.ndarray:
    """Contiguous block of ``[0, num_samples)`` for worker ``rank``; no padding, no shuffling.

    Blocks differ in length by at most one (the first ``num_samples % world_size`` workers get
    one more). Nothing is duplicated to even them out, so metrics see each image once; a caller
    that gathers across workers must allow unequal lengths.
    """
    _check_rank(rank, world_size)
    return np.array_split(np.arange(num_samples, dtype=np.int64), world_size)[rank]
