"""AugmentAhead: the same batches as augmenting one by one, checkpoints that resume the batch
not yet handed out, a clean stop. CPU here; the CUDA test (side stream) runs where a GPU is."""

from __future__ import annotations

import pytest
import torch

from eigenmap.config import DataConfig
from eigenmap.data import BatchAugment
from eigenmap.data.prefetch import AugmentAhead

RES = 16
BATCH = 4
STEPS = 5


def _batches(n: int = STEPS, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(n):
        images = torch.randint(0, 256, (BATCH, 2, RES, RES, 3), dtype=torch.uint8, generator=g).to(device)
        out.append((images[:, 0].permute(0, 3, 1, 2), images[:, 1].permute(0, 3, 1, 2),
                    torch.arange(BATCH, device=device) + 100 * step))
    return out


def _augment(seed: int = 7, device: str = "cpu", compile: bool = False) -> BatchAugment:
    return BatchAugment(DataConfig(resolution=RES), seed=seed, device=device, compile=compile)


class Source:
    """A generator over ``batches`` that records how far it was read and whether it was closed.

    It keeps a reference to its iterator, as a loader may: dropping the iterator does not close
    it, only an explicit ``close()`` does.
    """

    def __init__(self, batches):
        self.batches, self.drawn, self.closed, self.iterator = batches, 0, False, None

    def __iter__(self):
        self.iterator = self._batches()
        return self.iterator

    def _batches(self):
        try:
            for batch in self.batches:
                self.drawn += 1
                yield batch
        finally:
            self.closed = True


def test_yields_what_sequential_augmentation_gives():
    batches = _batches()
    plain = _augment()
    want = [(*plain(v1, v2), y) for v1, v2, y in batches]
    got = list(AugmentAhead(batches, _augment()))
    assert len(got) == STEPS
    for (w1, w2, wy), (g1, g2, gy) in zip(want, got):
        assert torch.equal(g1, w1) and torch.equal(g2, w2) and torch.equal(gy, wy)
        assert gy.data_ptr() != wy.data_ptr()  # a copy: the loader may reuse its label buffer


def test_state_after_n_batches_resumes_batch_n_plus_1_exactly():
    batches = _batches()
    plain = _augment()
    want = [plain(v1, v2) for v1, v2, _ in batches]
    augment = _augment()
    ahead = AugmentAhead(batches, augment)
    for n, _ in enumerate(ahead):
        state = ahead.augment_state()  # a checkpoint taken after step n
        assert torch.equal(ahead.state_dict()["generator"], state["generator"])  # what checkpoints ask for
        if n + 1 == STEPS:  # nothing ahead: the generator itself is where the next epoch starts
            assert torch.equal(state["generator"], augment.state_dict()["generator"])
            continue
        # batch n + 1 is already augmented: the generator itself is past it
        assert not torch.equal(state["generator"], augment.state_dict()["generator"])
        resumed = _augment(seed=0)
        resumed.load_state_dict(state)
        for got, expected in zip(resumed(*batches[n + 1][:2]), want[n + 1]):
            assert torch.equal(got, expected)


def test_stopping_early_closes_the_source_and_rewinds_the_batch_augmented_ahead():
    batches = _batches()
    augment = _augment()
    source = Source(batches)
    ahead = AugmentAhead(source, augment)
    for n, _ in enumerate(ahead):
        if n == 1:
            state = ahead.augment_state()
            break
    assert source.closed
    assert source.drawn == 3  # batches 0 and 1 handed out, batch 2 read and augmented ahead
    # the generator is back where batch 2 starts: continuing without the prefetcher gives
    # batch 2 exactly as an uninterrupted run does
    assert torch.equal(augment.state_dict()["generator"], state["generator"])
    assert torch.equal(ahead.augment_state()["generator"], state["generator"])
    uninterrupted = list(AugmentAhead(batches, _augment()))
    for got, want in zip(augment(*batches[2][:2]), uninterrupted[2][:2]):
        assert torch.equal(got, want)


def test_an_empty_source_yields_nothing_and_is_closed():
    augment = _augment()
    before = augment.state_dict()["generator"]
    source = Source([])
    assert list(AugmentAhead(source, augment)) == []
    assert source.closed
    assert torch.equal(augment.state_dict()["generator"], before)


def test_device_must_be_the_augmentations():
    with pytest.raises(ValueError, match="cuda"):
        AugmentAhead(_batches(1), _augment(), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (side stream)")
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cuda_side_stream_gives_sequential_results_and_resumable_states_without_host_syncs(compile):
    batches = _batches(device="cuda")
    plain = _augment(device="cuda", compile=compile)
    want = [plain(v1, v2) for v1, v2, _ in batches]  # also the warm-up (compilation, library handles)
    ahead = AugmentAhead(batches, _augment(device="cuda", compile=compile))
    got, states = [], []
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        for x1, x2, labels in ahead:
            # work queued on the main stream after the hand-out must see the side stream's results
            got.append((x1 * 1, x2 * 1, labels * 1))
            states.append(ahead.augment_state())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for n, (x1, x2, labels) in enumerate(got):
        assert torch.equal(x1, want[n][0]) and torch.equal(x2, want[n][1])
        assert torch.equal(labels, batches[n][2])
        if n + 1 < STEPS:
            resumed = _augment(seed=0, device="cuda", compile=compile)
            resumed.load_state_dict(states[n])
            assert torch.equal(resumed(*batches[n + 1][:2])[0], want[n + 1][0])
