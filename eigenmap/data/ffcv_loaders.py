"""FFCV loaders: the two-view training loader and the deterministic evaluation loader.

Training (:func:`build_train_loader`): one FFCV decoder op decodes each JPEG **once** and cuts
two independent random-resized crops from it, each flipped with its view's probability, on the
CPU threads (numba, ``data.loader_workers`` of them). The result goes to the device as uint8;
colour augmentations and normalisation are :class:`~eigenmap.data.augment.BatchAugment`'s job
there. The order is :func:`~eigenmap.data.sharding.train_shard`: a pure function of
(seed, epoch), one disjoint shard per worker, and a resumed epoch simply starts later in it.

Crops and flips are reproducible too: before each sample the decoder seeds its thread's numba
generator with :func:`sample_seeds` (a function of seed, epoch and the sample's index), so a
sample gets the same two crops whichever worker or thread decodes it, and a resumed epoch
repeats them exactly. (FFCV's own ops draw from unseeded per-thread generators.)

Evaluation (:func:`build_eval_loader`): resize the short side to ``data.eval_resize``, centre
crop ``data.resolution`` (one FFCV centre-crop op), normalise on the device; every image once
across workers, in dataset order.

FFCV resets PyTorch's intra-op thread count to its own number of threads whenever it builds or
starts a loader; these loaders put the caller's setting back, so the training loop's
``torch.set_num_threads`` stays in force.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Tuple, Union

import numpy as np
import torch

from .ffcv_compat import KeepTorchThreads, add_seed_column, caller_order, numba_threads, stop_epoch
from .sharding import eval_shard, steps_per_epoch, train_shard

__all__ = ["build_train_loader", "build_eval_loader", "TwoViewLoader", "EvalLoader", "sample_seeds", "label_shape"]


def _check_beton(path: Union[str, os.PathLike]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file '{p}' not found; write it with `eigenmap prepare SRC {p}`")
    return p


def _two_view_decoder_class():
    """Build the decoder op class lazily, so importing this module does not import FFCV."""
    from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder, get_random_crop
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler

    class TwoViewRandomResizedCrop(SimpleRGBImageDecoder):
        """Decode once, emit two random-resized crops, each flipped with its own probability.

        Output per image: ``[2, size, size, 3]`` uint8 (view axis first), i.e. a batch is
        ``[B, 2, size, size, 3]``. Interpolation is bilinear (OpenCV ``INTER_LINEAR``), like
        FFCV's own ``RandomResizedCropRGBImageDecoder``. Reads a ``seed`` column that
        :func:`~eigenmap.data.ffcv_compat.add_seed_column` adds to the image field's metadata.
        """

        def __init__(self, size: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                     flip_probs: Tuple[float, float]):
            super().__init__()
            self.size = int(size)
            self.scale = np.array(scale, dtype=np.float64)
            self.ratio = np.array(ratio, dtype=np.float64)
            self.flip_probs = (float(flip_probs[0]), float(flip_probs[1]))

        def declare_state_and_memory(self, previous_state):
            max_width = np.uint64(self.metadata["width"].max())
            max_height = np.uint64(self.metadata["height"].max())
            out_shape = (2, self.size, self.size, 3)
            u8 = np.dtype("<u1")
            return (
                replace(previous_state, jit_mode=True, shape=out_shape, dtype=u8),
                (AllocationQuery(out_shape, u8), AllocationQuery((max_height * max_width * np.uint64(3),), u8)),
            )

        def generate_code(self) -> Callable:
            jpg = IMAGE_MODES["jpg"]
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            imdecode_c = Compiler.compile(imdecode)
            resize_crop_c = Compiler.compile(resize_crop)
            get_crop_c = Compiler.compile(get_random_crop)
            scale, ratio = self.scale, self.ratio
            flip0, flip1 = self.flip_probs
            size = self.size
            half = size // 2

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, temp_storage = my_storage
                for dst_ix in my_range(len(batch_indices)):
                    field = metadata[batch_indices[dst_ix]]
                    # seeds this thread's generator for this sample: crops and flips become a
                    # function of (seed, epoch, sample), whichever thread or worker runs it
                    np.random.seed(np.uint32(field["seed"]))
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height = np.uint32(field["height"])
                    width = np.uint32(field["width"])
                    if field["mode"] == jpg:
                        buf = temp_storage[dst_ix]
                        imdecode_c(image_data, buf, height, width, height, width, 0, 0, 1, 1, False, False)
                        image = buf.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                    else:
                        image = image_data.reshape(height, width, 3)
                    for v in range(2):
                        i, j, h, w = get_crop_c(height, width, scale, ratio)
                        out = destination[dst_ix, v]
                        resize_crop_c(image, i, i + h, j, j + w, out)
                        if np.random.rand() < (flip0 if v == 0 else flip1):
                            for r in range(size):
                                for c in range(half):
                                    for k in range(3):
                                        tmp = out[r, c, k]
                                        out[r, c, k] = out[r, size - 1 - c, k]
                                        out[r, size - 1 - c, k] = tmp
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    return TwoViewRandomResizedCrop


def sample_seeds(num_samples: int, *, seed: int, epoch: int) -> np.ndarray:
    """Per-sample 32-bit seeds of the CPU-side crops and flips of one epoch, ``[num_samples]``.

    A pure function of (seed, epoch, sample index), independent of the sharding, so a sample
    gets the same crops whichever worker reads it and a resumed run repeats them exactly.
    """
    base = np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1, dtype=np.uint64)[0]
    # splitmix64 of base + index: well mixed, vectorised (uint64 arithmetic wraps)
    z = np.arange(num_samples, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


def label_shape(reader) -> Tuple[int, ...]:
    """The shape of one sample's label in a ``.beton``: ``()`` for a class index (an FFCV
    ``IntField``), ``(C,)`` for a multi-hot row (an ``NDArrayField`` of uint8, what
    ``eigenmap prepare --list`` writes for a multi-label list).

    Args:
        reader: the file's ``ffcv.reader.Reader``.
    """
    from ffcv.fields import NDArrayField

    handler = reader.handlers.get("label")
    if isinstance(handler, NDArrayField):
        return tuple(int(c) for c in handler.shape)
    return ()


def _label_pipeline(reader, device: torch.device) -> list:
    """int64 ``[B]`` class indices, or uint8 ``[B, C]`` multi-hot rows, as the file stores them."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.ndarray import NDArrayDecoder
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    ops = [NDArrayDecoder(), ToTensor()] if label_shape(reader) else [IntDecoder(), ToTensor(), Squeeze(1)]
    if device.type == "cuda":
        ops.append(ToDevice(device, non_blocking=True))
    return ops


class TwoViewLoader:
    """Iterates ``(view1, view2, labels)`` for one worker's shard of one epoch.

    ``view1``/``view2``: uint8 ``[B, 3, H, W]`` (channels-last strides, views into one
    ``[B, 2, H, W, 3]`` buffer), randomly resized-cropped and flipped; ``labels``: int64 ``[B]``
    (uint8 ``[B, C]`` multi-hot rows from a multi-label file, see :attr:`label_shape`); all on
    ``device``. The views live in FFCV's rotating buffers: use (or copy) them before
    drawing the next batch (:class:`~eigenmap.data.augment.BatchAugment` makes new tensors);
    the labels are a copy.

    ``len(loader)`` is the number of steps of a full epoch (equal on every worker). Iterating
    yields the batches of ``(epoch, start_step)`` as set by :meth:`set_epoch`: after
    ``set_epoch(e, start_step=s)`` it yields ``len(loader) - s`` batches, exactly those a run that
    started epoch ``e`` from the beginning would have seen after step ``s``, with the same crops
    and flips (they are seeded per sample by ``(seed, epoch)``). Iterating again
    without :meth:`set_epoch` repeats the same epoch, as torch's ``DistributedSampler`` does.
    """

    def __init__(self, data_cfg, path: Union[str, os.PathLike], *, rank: int, world_size: int, seed: int,
                 epoch: int = 0, start_step: int = 0, device: Union[str, torch.device] = "cpu"):
        with KeepTorchThreads():  # importing FFCV sets torch's thread count to 1
            from ffcv.loader import Loader
            from ffcv.pipeline import PipelineSpec
            from ffcv.reader import Reader
            from ffcv.transforms import ToDevice, ToTensor

        path = _check_beton(path)
        reader = Reader(str(path))
        self.num_samples = int(reader.num_samples)
        self.label_shape = label_shape(reader)  # () class indices, (C,) multi-hot rows
        self.data_cfg = data_cfg
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batch_size = data_cfg.batch_size_per_worker
        self.device = torch.device(device)
        self.path = path
        # FFCV sizes its loader on the first order it sees: build it on a full epoch
        self.epoch, self.start_step = 0, 0
        self._steps = steps_per_epoch(self.num_samples, world_size=world_size, batch_size=self.batch_size)
        if self._steps == 0:
            raise ValueError(
                f"'{path}' has {self.num_samples} images: too few for {world_size} workers x batch "
                f"{self.batch_size}; lower data.batch_size_per_worker"
            )

        decoder = _two_view_decoder_class()(
            data_cfg.resolution,
            scale=(data_cfg.scale_min, data_cfg.scale_max),
            ratio=(data_cfg.ratio_min, data_cfg.ratio_max),
            flip_probs=(data_cfg.view1.flip_prob, data_cfg.view2.flip_prob),
        )
        image_ops = [ToTensor()]
        if self.device.type == "cuda":
            image_ops.append(ToDevice(self.device, non_blocking=True))
        with KeepTorchThreads():
            self._loader = Loader(
                str(path),
                batch_size=self.batch_size,
                num_workers=numba_threads(data_cfg.loader_workers),
                os_cache=data_cfg.os_cache,
                order=caller_order(self._order),
                pipelines={"image": PipelineSpec("image", decoder=decoder, transforms=image_ops),
                           "label": _label_pipeline(reader, self.device)},
                drop_last=False,  # whole batches already: train_shard drops the remainder
                batches_ahead=2,
            )
        # the decoder's seeds (see add_seed_column); EpochIterator reads reader.metadata
        field = f"f{self._loader.field_name_to_f_ix['image']}"
        self._metadata = add_seed_column(self._loader.reader.metadata, field)
        self._seeds = self._metadata[field]["seed"]
        self._loader.reader.metadata = self._metadata
        self.set_epoch(epoch, start_step=start_step)

    def _order(self) -> np.ndarray:
        return train_shard(self.num_samples, rank=self.rank, world_size=self.world_size, seed=self.seed,
                           epoch=self.epoch, batch_size=self.batch_size, start_step=self.start_step)

    def indices(self) -> np.ndarray:
        """Dataset indices this worker reads for the current ``(epoch, start_step)``, ``[n]``."""
        return self._order()

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (and the step inside it to resume from) of the next iteration."""
        if epoch < 0:
            raise ValueError(f"epoch {epoch} must be >= 0")
        if not 0 <= start_step <= self._steps:
            raise ValueError(f"start_step {start_step} must be in [0, {self._steps}] (steps per epoch)")
        self.epoch, self.start_step = int(epoch), int(start_step)

    def __len__(self) -> int:
        return self._steps

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.start_step == self._steps:
            return
        keep = KeepTorchThreads()
        self._seeds[:] = sample_seeds(self.num_samples, seed=self.seed, epoch=self.epoch)
        it = iter(self._loader)
        try:
            for n, (images, labels) in enumerate(it):
                if n == 0:
                    keep.restore()  # FFCV's thread has set its count by the time a batch exists
                # [B, 2, H, W, 3] -> two [B, 3, H, W] views, no copy; labels are tiny and kept
                # by callers (logs, probes), so they get their own memory
                yield images[:, 0].permute(0, 3, 1, 2), images[:, 1].permute(0, 3, 1, 2), labels.clone()
        finally:
            stop_epoch(it)
            keep.restore()


def build_train_loader(data_cfg, path: Union[str, os.PathLike], *, rank: int, world_size: int, seed: int,
                       epoch: int = 0, start_step: int = 0,
                       device: Union[str, torch.device] = torch.device("cpu")) -> TwoViewLoader:
    """The two-view FFCV training loader of one worker.

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig` (resolution, scale/ratio ranges, per-view
            ``flip_prob``, ``batch_size_per_worker``, ``loader_workers``, ``os_cache``).
        path: ``.beton`` written by ``eigenmap prepare``.
        rank, world_size: this worker's shard.
        seed: with the epoch, fixes the order and every sample's two crops and flips.
        epoch, start_step: where to start (resume); see :meth:`TwoViewLoader.set_epoch`.
        device: where batches are delivered (non-blocking copies from pinned memory on CUDA).

    Returns:
        A :class:`TwoViewLoader` yielding ``(view1 [B,3,H,W] uint8, view2 [B,3,H,W] uint8,
        labels [B] int64)`` with ``H = W = data_cfg.resolution`` (labels uint8 ``[B, C]`` from a
        multi-label file).
    """
    return TwoViewLoader(data_cfg, path, rank=rank, world_size=world_size, seed=seed,
                         epoch=epoch, start_step=start_step, device=device)


def normalisation_rows(mean, std, side: int, *, device: Union[str, torch.device] = "cpu"
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and 1/std on the 0-255 scale, tiled over a ``side x side`` image in
    NHWC order: two ``[side * side * 3]`` float32 rows for :func:`normalise_uint8`."""
    mean = torch.tensor(mean, dtype=torch.float32, device=device) * 255.0
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32, device=device) * 255.0)
    return mean.repeat(side * side), inv_std.repeat(side * side)


def normalise_uint8(images: torch.Tensor, mean_row: torch.Tensor, inv_std_row: torch.Tensor) -> torch.Tensor:
    """``(images - mean) / std`` per channel, as a new float32 tensor.

    Args:
        images: ``[B, 3, S, S]`` uint8 (any layout; FFCV's ``ToTorchImage`` gives channels_last).
        mean_row, inv_std_row: ``[S * S * 3]`` from :func:`normalisation_rows`.

    Returns:
        ``[B, 3, S, S]`` float32, channels_last.
    """
    # One long row broadcast over a flat NHWC view: PyTorch vectorises it, where a [1, 3, 1, 1]
    # mean against channels_last memory (innermost dimension 3) runs element by element, and
    # multiplying by 1/std avoids float division. Together about 5x faster on the project's CPU
    # machine (tools/bench_extract.py, normalise_ms_per_batch); the result may differ from
    # dividing by std in the last bit.
    b, _, h, w = images.shape
    nhwc = images.permute(0, 2, 3, 1).contiguous()  # a no-op for channels_last input
    x = nhwc.reshape(b, -1).float().sub_(mean_row).mul_(inv_std_row)
    return x.view(b, h, w, 3).permute(0, 3, 1, 2)


class EvalLoader:
    """Iterates ``(images, labels)``: float32 normalised ``[B, 3, R, R]`` channels_last, int64 ``[B]``
    (uint8 ``[B, C]`` multi-hot rows from a multi-label file: :attr:`label_shape` is ``(C,)``).

    Deterministic: resize short side to ``eval_resize``, centre crop ``R = resolution``; this
    worker's contiguous block of the dataset in order (:func:`~eigenmap.data.sharding.eval_shard`),
    the last batch possibly smaller.
    """

    def __init__(self, data_cfg, path: Union[str, os.PathLike], *, batch_size: int, rank: int = 0,
                 world_size: int = 1, device: Union[str, torch.device] = "cpu"):
        with KeepTorchThreads():  # importing FFCV sets torch's thread count to 1
            from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
            from ffcv.loader import Loader, OrderOption
            from ffcv.reader import Reader
            from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

        path = _check_beton(path)
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1")
        self.device = torch.device(device)
        reader = Reader(str(path))
        self.num_samples = int(reader.num_samples)
        self.label_shape = label_shape(reader)  # () class indices, (C,) multi-hot rows
        self.indices = eval_shard(self.num_samples, rank=rank, world_size=world_size)
        res = data_cfg.resolution
        image_ops = [CenterCropRGBImageDecoder((res, res), ratio=res / data_cfg.eval_resize), ToTensor()]
        if self.device.type == "cuda":
            image_ops.append(ToDevice(self.device, non_blocking=True))
        image_ops.append(ToTorchImage(channels_last=True))
        self.batch_size = batch_size
        self._mean, self._inv_std = normalisation_rows(data_cfg.mean, data_cfg.std, res, device=self.device)
        self._loader = None
        if len(self.indices):
            with KeepTorchThreads():
                self._loader = Loader(
                    str(path), batch_size=batch_size, num_workers=numba_threads(data_cfg.loader_workers),
                    os_cache=data_cfg.os_cache, order=OrderOption.SEQUENTIAL, indices=self.indices,
                    pipelines={"image": image_ops, "label": _label_pipeline(reader, self.device)},
                    drop_last=False, batches_ahead=2,
                )

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            return
        keep = KeepTorchThreads()
        it = iter(self._loader)
        try:
            for n, (images, labels) in enumerate(it):
                if n == 0:
                    keep.restore()
                # a new tensor: FFCV's buffer is free for the next batch at once
                yield normalise_uint8(images, self._mean, self._inv_std), labels.clone()
        finally:
            stop_epoch(it)
            keep.restore()


def build_eval_loader(data_cfg, path: Union[str, os.PathLike], *, batch_size: int, rank: int = 0,
                      world_size: int = 1, device: Union[str, torch.device] = torch.device("cpu")) -> EvalLoader:
    """The deterministic evaluation loader (feature extraction, probe, retrieval).

    Args:
        data_cfg: :class:`eigenmap.config.DataConfig` (``resolution``, ``eval_resize``,
            ``mean``, ``std``, ``loader_workers``, ``os_cache``).
        path: ``.beton`` written by ``eigenmap prepare``.
        batch_size: images per batch (the last one may be smaller).
        rank, world_size: contiguous unpadded blocks; block sizes differ by at most one image,
            nothing is duplicated (so gathers must allow unequal lengths).
        device: where batches are delivered.

    Returns:
        An :class:`EvalLoader` yielding ``(images [B, 3, R, R] float32 channels_last, labels [B]
        int64)`` (labels uint8 ``[B, C]`` from a multi-label file).
    """
    return EvalLoader(data_cfg, path, batch_size=batch_size, rank=rank, world_size=world_size, device=device)
