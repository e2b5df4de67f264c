"""The torchvision twin of the two-view training loader: ImageFolder-style files + DataLoader.

Same contract as :class:`~eigenmap.data.ffcv_loaders.TwoViewLoader`, for comparison (the
benchmark's baseline) and as a reference in tests: each image is decoded once (Pillow, through
:func:`~eigenmap.data.decode.load_rgb`, the writer's own sanitiser), two independent
``RandomResizedCrop`` + ``RandomHorizontalFlip`` views are cut from it on the DataLoader's
worker processes, and batches ``(view1 uint8 [B,3,H,W], view2 uint8 [B,3,H,W], labels int64 [B])``
come out, ready for the same :class:`~eigenmap.data.augment.BatchAugment`.

Differences from the FFCV path, by design of the two libraries: torchvision resizes with
antialiased bilinear interpolation, FFCV with OpenCV's plain bilinear (no antialias); the FFCV
file holds a JPEG re-encoding of each image. Both change pixel statistics very little (see the
tests), not their distribution.

Item ``i`` is the ``i``-th *good* file in the writer's enumeration order (class, then path),
when the files the writer skipped are passed as ``exclude``: then index ``i`` is the same image
in the twin and in the ``.beton``, and the same shard indices select the same images.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

import numpy as np
import torch

from eigenmap.data.sharding import steps_per_epoch, train_shard
from eigenmap.data.sources import ImageFiles

__all__ = ["TwoViewFolder", "ShardSampler", "TwinLoader", "build_twin_train_loader"]


class _TwoViews:
    """Picklable per-image transform: two independent crop + flip views, uint8 ``[3, S, S]``."""

    def __init__(self, data_cfg):
        import torchvision.transforms.v2 as T

        self.crop = T.RandomResizedCrop(
            data_cfg.resolution, scale=(data_cfg.scale_min, data_cfg.scale_max),
            ratio=(data_cfg.ratio_min, data_cfg.ratio_max),
            interpolation=T.InterpolationMode.BILINEAR, antialias=True,
        )
        self.flips = (T.RandomHorizontalFlip(data_cfg.view1.flip_prob), T.RandomHorizontalFlip(data_cfg.view2.flip_prob))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flips[0](self.crop(image)).contiguous(), self.flips[1](self.crop(image)).contiguous()


class TwoViewFolder(torch.utils.data.Dataset):
    """Class folders of images as ``(view1, view2, label)`` items.

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig`.
        image_folder: ImageFolder root (classes = sorted folder names, as torchvision's).
        exclude: paths to leave out (the ``skipped`` list of the ``.beton``'s manifest), so that
            item ``i`` is sample ``i`` of the ``.beton``.
    """

    def __init__(self, data_cfg, image_folder: Union[str, os.PathLike], exclude: Iterable[str] = ()):
        source = ImageFiles.from_folder(image_folder)
        excluded = {os.path.abspath(p) for p in exclude}
        keep = np.ones(len(source), dtype=bool)
        if excluded:
            for i in range(len(source)):
                keep[i] = os.path.abspath(source.describe(i)) not in excluded
        self.source = source
        self.items = np.flatnonzero(keep)
        self.classes = source.classes
        self.transform = _TwoViews(data_cfg)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        i = int(self.items[index])
        image = torch.from_numpy(self.source.load(i)).permute(2, 0, 1)
        view1, view2 = self.transform(image)
        return view1, view2, int(self.source.labels[i])


class ShardSampler(torch.utils.data.Sampler):
    """Yields :func:`~eigenmap.data.sharding.train_shard` for the epoch set by :meth:`set_epoch`."""

    def __init__(self, num_samples: int, *, rank: int, world_size: int, seed: int, batch_size: int,
                 epoch: int = 0, start_step: int = 0):
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.batch_size = seed, batch_size
        self.set_epoch(epoch, start_step)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = int(epoch), int(start_step)
        self._indices = train_shard(self.num_samples, rank=self.rank, world_size=self.world_size, seed=self.seed,
                                    epoch=self.epoch, batch_size=self.batch_size, start_step=self.start_step)

    def __iter__(self):
        return iter(self._indices.tolist())

    def __len__(self) -> int:
        return len(self._indices)


class TwinLoader:
    """A DataLoader over a :class:`ShardSampler`, with :class:`TwoViewLoader`'s interface.

    ``len()`` is the number of steps of a full epoch; iterating yields the batches of the
    ``(epoch, start_step)`` set by :meth:`set_epoch`. With ``persistent_workers`` the worker
    processes survive from epoch to epoch (their start-up is paid once).
    """

    def __init__(self, dataset: TwoViewFolder, sampler: ShardSampler, *, batch_size: int, num_workers: int,
                 seed: int, persistent_workers: bool):
        self.dataset, self.sampler = dataset, sampler
        generator = torch.Generator()
        generator.manual_seed(int(np.random.SeedSequence([seed, sampler.rank]).generate_state(1)[0]))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
            generator=generator, persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
        )
        self._steps = steps_per_epoch(len(dataset), world_size=sampler.world_size, batch_size=batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return self._steps

    def __iter__(self):
        return iter(self.loader)


def build_twin_train_loader(data_cfg, image_folder: Union[str, os.PathLike, None], *, rank: int, world_size: int,
                            seed: int, epoch: int = 0, num_workers: int, start_step: int = 0,
                            exclude: Iterable[str] = (), dataset: Optional[TwoViewFolder] = None,
                            persistent_workers: bool = True) -> TwinLoader:
    """The torchvision twin of :func:`~eigenmap.data.build_train_loader` for one worker.

    The shard and its order are :func:`~eigenmap.data.sharding.train_shard`'s, exactly as in the
    FFCV loader; crops and flips come from torch's generator in each DataLoader worker, seeded
    from ``(seed, rank)``.

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig` (resolution, scale/ratio, flip_prob,
            batch_size_per_worker).
        image_folder: ImageFolder root (may be None when ``dataset`` is given).
        rank, world_size, seed, epoch, start_step: as for ``build_train_loader``.
        num_workers: DataLoader worker processes (0 = in this process).
        exclude: paths the ``.beton``'s writer skipped (its manifest's ``skipped`` paths).
        dataset: reuse an already enumerated :class:`TwoViewFolder` (saves a directory walk).
        persistent_workers: keep the worker processes from epoch to epoch.

    Returns:
        A :class:`TwinLoader` yielding ``(view1 [B,3,H,W] uint8, view2 [B,3,H,W] uint8,
        labels [B] int64)`` on the CPU.
    """
    ds = dataset if dataset is not None else TwoViewFolder(data_cfg, image_folder, exclude=exclude)
    batch_size = data_cfg.batch_size_per_worker
    if steps_per_epoch(len(ds), world_size=world_size, batch_size=batch_size) == 0:
        raise ValueError(f"{len(ds)} images are too few for {world_size} workers x batch {batch_size}")
    sampler = ShardSampler(len(ds), rank=rank, world_size=world_size, seed=seed, batch_size=batch_size,
                           epoch=epoch, start_step=start_step)
    return TwinLoader(ds, sampler, batch_size=batch_size, num_workers=num_workers, seed=seed,
                      persistent_workers=persistent_workers)
