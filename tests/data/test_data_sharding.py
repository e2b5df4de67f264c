"""Shard arithmetic: disjoint, covering, ordered by (seed, epoch), resumable."""

from __future__ import annotations

import numpy as np
import pytest

from eigenmap.data import epoch_permutation, eval_shard, steps_per_epoch, train_shard


@pytest.mark.parametrize("num_samples, world_size", [(203, 2), (200, 2), (203, 3), (5, 4)])
def test_shards_without_drop_last_are_disjoint_and_their_union_is_the_dataset(num_samples, world_size):
    shards = [train_shard(num_samples, rank=r, world_size=world_size, seed=3, epoch=1, batch_size=8,
                          drop_last=False) for r in range(world_size)]
    joined = np.concatenate(shards)
    assert len(joined) == len(set(joined.tolist())) == num_samples
    assert set(joined.tolist()) == set(range(num_samples))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_drop_last_shards_are_disjoint_whole_batches_of_equal_length():
    n, w, b = 203, 3, 8
    shards = [train_shard(n, rank=r, world_size=w, seed=0, epoch=0, batch_size=b) for r in range(w)]
    steps = steps_per_epoch(n, world_size=w, batch_size=b)
    assert steps == (203 // 3) // 8 == 8
    assert all(len(s) == steps * b for s in shards)
    joined = np.concatenate(shards)
    assert len(set(joined.tolist())) == len(joined)  # disjoint
    assert joined.min() >= 0 and joined.max() < n


def test_order_changes_with_the_epoch_and_repeats_for_the_same_seed_and_epoch():
    a = train_shard(1000, rank=0, world_size=2, seed=7, epoch=4, batch_size=10)
    assert np.array_equal(a, train_shard(1000, rank=0, world_size=2, seed=7, epoch=4, batch_size=10))
    assert not np.array_equal(a, train_shard(1000, rank=0, world_size=2, seed=7, epoch=5, batch_size=10))
    assert not np.array_equal(a, train_shard(1000, rank=0, world_size=2, seed=8, epoch=4, batch_size=10))
    assert sorted(epoch_permutation(1000, seed=7, epoch=4).tolist()) == list(range(1000))


def test_start_step_drops_exactly_the_first_batches():
    full = train_shard(500, rank=1, world_size=2, seed=1, epoch=2, batch_size=16)
    resumed = train_shard(500, rank=1, world_size=2, seed=1, epoch=2, batch_size=16, start_step=5)
    assert np.array_equal(resumed, full[5 * 16:])
    with pytest.raises(ValueError, match="start_step"):
        train_shard(500, rank=1, world_size=2, seed=1, epoch=2, batch_size=16, start_step=16)


def test_eval_shards_are_contiguous_unpadded_blocks_in_dataset_order():
    blocks = [eval_shard(224, rank=r, world_size=3) for r in range(3)]
    assert [len(b) for b in blocks] == [75, 75, 74]
    assert np.array_equal(np.concatenate(blocks), np.arange(224))


def test_bad_rank_is_an_error_naming_it():
    with pytest.raises(ValueError, match="rank 2"):
        train_shard(10, rank=2, world_size=2, seed=0, epoch=0, batch_size=1)
