"""A synthetic two-view source with the training loader's contract (benchmarks, GPU checks).

Chosen by ``data.train_path: synthetic``. It yields ``(view1, view2, labels)``: uint8
[B, 3, H, W] x 2 and int64 [B], like ``eigenmap.data.build_train_loader``, from a small pool
of random batches made once on the training device, so the step is measured without any
decoding or host-to-device copy. Same seed, same batches; ``len(loader)`` steps per epoch,
the same on every rank.
"""

from __future__ import annotations

from typing import Iterator

import torch

from eigenmap.config import DataConfig

__all__ = ["SyntheticTwoViewLoader", "SYNTHETIC"]

# the value of data.train_path that selects this source
SYNTHETIC = "synthetic"


class SyntheticTwoViewLoader:
    """Random uint8 image pairs and labels; ``set_epoch(epoch, start_step)`` like the real loader.

    Args:
        data_cfg: uses ``batch_size_per_worker``, ``resolution`` and ``synthetic_images``
            (images per epoch over all workers; the last partial global batch is dropped).
        num_classes: labels are drawn from [0, num_classes).
        rank, world_size, seed: the batches differ per rank and seed.
        device: where the pool lives (the training device).
        pool_batches: distinct batches cycled through (memory: pool_batches * 6 * B * H * W bytes).
    """

    def __init__(self, data_cfg: DataConfig, *, num_classes: int, rank: int, world_size: int, seed: int,
                 epoch: int = 0, start_step: int = 0, device: torch.device | str = "cpu",
                 pool_batches: int = 4):
        b, r = data_cfg.batch_size_per_worker, data_cfg.resolution
        self.steps_per_epoch = max(data_cfg.synthetic_images // (b * world_size), 1)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        self.pool = [
            (torch.randint(0, 256, (b, 3, r, r), dtype=torch.uint8, generator=gen).to(device),
             torch.randint(0, 256, (b, 3, r, r), dtype=torch.uint8, generator=gen).to(device),
             torch.randint(0, num_classes, (b,), dtype=torch.int64, generator=gen).to(device))
            for _ in range(pool_batches)
        ]
        self.set_epoch(epoch, start_step)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for step in range(self.start_step, self.steps_per_epoch):
            yield self.pool[(self.epoch * self.steps_per_epoch + step) % len(self.pool)]
