"""The FFCV loaders on real FFCV files: shards, order, resume, flips, evaluation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from eigenmap.config import DataConfig, ViewAugmentConfig
from eigenmap.data import build_eval_loader, build_train_loader, train_shard
from eigenmap.data.ffcv_loaders import normalisation_rows, normalise_uint8

BATCH = 16
SIDE = 32  # the index images' side (conftest.INDEX_SIDE)
COUNT = 224  # conftest.INDEX_COUNT


def _cfg(**kwargs) -> DataConfig:
    # crops of the whole image (scale 1, ratio 1): the only randomness left is the flip
    base = dict(resolution=SIDE, eval_resize=SIDE, batch_size_per_worker=BATCH, loader_workers=1,
                scale_min=1.0, scale_max=1.0, ratio_min=1.0, ratio_max=1.0)
    base.update(kwargs)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def two_ranks(index_beton):
    cfg = _cfg()
    return [build_train_loader(cfg, index_beton, rank=r, world_size=2, seed=5) for r in range(2)]


def _epoch(loader):
    """(labels [n], view1 [n,3,H,W], view2) of one iteration, copied out of FFCV's buffers."""
    labels, v1, v2 = [], [], []
    for a, b, y in loader:
        v1.append(a.clone())
        v2.append(b.clone())
        labels.append(y.clone())
    return torch.cat(labels).numpy(), torch.cat(v1), torch.cat(v2)


def _flipped(views: torch.Tensor) -> np.ndarray:
    """Index images are dark on the left, bright on the right: flipped ones the other way."""
    left = views[:, 1, :, : SIDE // 2].float().mean(dim=(1, 2))
    right = views[:, 1, :, SIDE // 2:].float().mean(dim=(1, 2))
    return (left > right).numpy()


def test_batches_are_two_uint8_views_and_int64_labels(two_ranks):
    loader = two_ranks[0]
    assert len(loader) == COUNT // 2 // BATCH
    v1, v2, y = next(iter(loader))
    assert v1.shape == v2.shape == (BATCH, 3, SIDE, SIDE)
    assert v1.dtype == v2.dtype == torch.uint8
    assert y.shape == (BATCH,) and y.dtype == torch.int64


def test_two_shards_are_disjoint_and_their_union_is_the_dataset(two_ranks):
    for loader in two_ranks:
        loader.set_epoch(0)
    labels = [_epoch(loader)[0] for loader in two_ranks]
    assert not set(labels[0].tolist()) & set(labels[1].tolist())
    assert sorted(np.concatenate(labels).tolist()) == list(range(COUNT))


def test_each_rank_reads_its_shard_in_the_order_of_seed_and_epoch(two_ranks):
    loader = two_ranks[1]
    loader.set_epoch(3)
    labels, v1, v2 = _epoch(loader)
    assert np.array_equal(labels, train_shard(COUNT, rank=1, world_size=2, seed=5, epoch=3, batch_size=BATCH))
    # the pixels belong to the labelled image: its marker pixel is at one of the top corners
    marker = torch.from_numpy(labels % 256).to(torch.uint8)
    for views in (v1, v2):
        assert bool(((views[:, 0, 0, 0] == marker) | (views[:, 0, 0, -1] == marker)).all())
    loader.set_epoch(4)
    other = _epoch(loader)[0]
    assert not np.array_equal(labels, other)
    loader.set_epoch(3)
    assert np.array_equal(_epoch(loader)[0], labels)


def test_resume_sees_exactly_the_remaining_batches_of_the_epoch(two_ranks):
    loader = two_ranks[0]
    loader.set_epoch(2)
    full = _epoch(loader)[0]
    loader.set_epoch(2, start_step=3)
    resumed = _epoch(loader)[0]
    assert len(loader) == len(full) // BATCH  # len stays the full epoch's
    assert np.array_equal(resumed, full[3 * BATCH:])
    with pytest.raises(ValueError, match="start_step"):
        loader.set_epoch(2, start_step=len(loader) + 1)


def test_flip_is_about_one_half_on_each_view_and_drawn_independently(two_ranks):
    loader = two_ranks[0]
    flips1, flips2 = [], []
    for epoch in range(6):
        loader.set_epoch(epoch)
        _, v1, v2 = _epoch(loader)
        flips1.append(_flipped(v1))
        flips2.append(_flipped(v2))
    f1, f2 = np.concatenate(flips1), np.concatenate(flips2)
    # n = 672 per view: the standard error of a proportion near 0.5 is 0.019
    assert abs(f1.mean() - 0.5) < 0.08 and abs(f2.mean() - 0.5) < 0.08
    assert abs((f1 & f2).mean() - 0.25) < 0.07


def test_flip_probability_is_taken_per_view(index_beton):
    cfg = _cfg(view1=ViewAugmentConfig(flip_prob=1.0), view2=ViewAugmentConfig(flip_prob=0.0))
    loader = build_train_loader(cfg, index_beton, rank=0, world_size=1, seed=0)
    _, v1, v2 = _epoch(loader)
    assert _flipped(v1).all() and not _flipped(v2).any()


def test_loader_leaves_torch_thread_count_alone(index_beton):
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)
    wanted = torch.get_num_threads()
    try:
        loader = build_train_loader(_cfg(loader_workers=2), index_beton, rank=0, world_size=1, seed=0)
        for _ in loader:
            assert torch.get_num_threads() == wanted
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)



def _epoch_threads() -> list:
    return [t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()]


# FFCV's queue holds 2 batches: leaving after batch 1 finds the thread waiting to put batch 4;
# leaving after batch 12 of 14 finds it done decoding and blocked on putting its end marker
@pytest.mark.parametrize("leave_after", [1, COUNT // BATCH - 2])
def test_leaving_an_epoch_early_stops_ffcv_s_decoding_thread(index_beton, leave_after):
    """A thread still decoding when the process exits aborts it (SIGABRT in numba's TBB pool)."""
    loaders = [build_train_loader(_cfg(loader_workers=2), index_beton, rank=0, world_size=1, seed=0),
               build_eval_loader(_cfg(loader_workers=2), index_beton, batch_size=BATCH)]
    for loader in loaders:
        for n, _ in enumerate(loader, start=1):
            if n == leave_after:
                time.sleep(0.3)  # the thread fills the queue (32 px images decode in milliseconds)
                break
        assert n == leave_after and not _epoch_threads()

def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.beton"):
        build_train_loader(_cfg(), tmp_path / "nothing.beton", rank=0, world_size=1, seed=0)


def test_eval_loader_is_deterministic_and_sees_every_image_once_across_ranks(index_beton):
    cfg = _cfg(eval_resize=SIDE + SIDE // 4)  # the centre crop drops a border
    seen, first_pass = [], []
    for rank in range(3):
        loader = build_eval_loader(cfg, index_beton, batch_size=50, rank=rank, world_size=3)
        batches = [(x.clone(), y.clone()) for x, y in loader]
        again = [(x.clone(), y.clone()) for x, y in loader]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
        seen.extend(torch.cat([y for _, y in batches]).tolist())
        first_pass.extend(x for x, _ in batches)
    assert seen == list(range(COUNT))  # uneven blocks 75/75/74, in dataset order, none padded
    x = first_pass[0]
    assert x.dtype == torch.float32 and x.shape[1:] == (3, SIDE, SIDE)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # normalised: undoing it gives the stored levels (20 dark, 230 bright) in [0, 1]
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    pixels = (x * std + mean) * 255
    assert abs(pixels[:, 1:, :, 2:8].mean().item() - 20) < 1.5
    assert abs(pixels[:, 1:, :, -8:-2].mean().item() - 230) < 1.5


@pytest.mark.parametrize("channels_last", [True, False])
def test_eval_normalisation_matches_per_channel_mean_and_std_in_either_layout(channels_last):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.randint(0, 256, (5, 3, 7, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    x = normalise_uint8(images, *normalisation_rows(mean, std, 7))
    expected = (images.double() - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (torch.tensor(std).view(1, 3, 1, 1) * 255)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.double(), expected, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def random_crop_cfg() -> DataConfig:
    return DataConfig(resolution=SIDE, batch_size_per_worker=BATCH, loader_workers=2)


def test_crops_and_flips_repeat_for_the_same_seed_and_epoch_and_resume_exactly(subset_beton, random_crop_cfg):
    a = build_train_loader(random_crop_cfg, subset_beton, rank=0, world_size=1, seed=4)
    b = build_train_loader(random_crop_cfg, subset_beton, rank=0, world_size=1, seed=4)  # e.g. a restarted run
    a.set_epoch(1)
    b.set_epoch(1)
    _, a1, a2 = _epoch(a)
    _, b1, b2 = _epoch(b)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)  # the two views are different crops
    b.set_epoch(1, start_step=2)
    _, r1, r2 = _epoch(b)
    assert torch.equal(r1, a1[2 * BATCH:]) and torch.equal(r2, a2[2 * BATCH:])
    b.set_epoch(2)
    assert not torch.equal(_epoch(b)[1][:BATCH], a1[:BATCH])


def test_a_samples_crops_do_not_depend_on_the_sharding(subset_beton, random_crop_cfg):
    whole = build_train_loader(random_crop_cfg, subset_beton, rank=0, world_size=1, seed=4)
    half = build_train_loader(random_crop_cfg, subset_beton, rank=1, world_size=2, seed=4)
    whole.set_epoch(0)
    half.set_epoch(0)
    _, w1, w2 = _epoch(whole)
    _, h1, h2 = _epoch(half)
    position = {int(i): p for p, i in enumerate(whole.indices())}
    pairs = [(k, position[int(i)]) for k, i in enumerate(half.indices()) if int(i) in position]
    assert len(pairs) > BATCH
    mine, theirs = (torch.tensor(x) for x in zip(*pairs))
    # sample i has the same two crops whether one worker reads it or the second of two
    assert torch.equal(h1[mine], w1[theirs]) and torch.equal(h2[mine], w2[theirs])
