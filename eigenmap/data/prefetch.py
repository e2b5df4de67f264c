"""Augment the next batch while the current training step runs.

:class:`AugmentAhead` wraps the loader and a :class:`~eigenmap.data.augment.BatchAugment`.
Before it hands out batch ``n`` it has already drawn batch ``n + 1`` from the loader and queued
its augmentation; on CUDA that work goes on a side stream, so it runs while the consumer's
step ``n`` runs on the main stream, and step ``n + 1`` waits for it on the device (no host
synchronisation anywhere). On the CPU there is no stream and the augmentation runs in place,
in the same order, so the random state behaves identically on both.

Checkpoints: one batch is always augmented ahead of the consumer, so the generator of the
BatchAugment has already moved past the batch the consumer will see next. A checkpoint must
store :meth:`AugmentAhead.augment_state` (the position *before* that batch), not
``augment.state_dict()``: on resume the loader yields that batch again and it must be
augmented with the same draws. In a training loop::

    loader.set_epoch(epoch, start_step=step_in_epoch)
    ahead = AugmentAhead(loader, augment)
    for x1, x2, labels in ahead:
        ...  # the step
        if checkpoint_now:  # pass the AugmentAhead where the BatchAugment went
            write_checkpoint(path, engine, state, ahead, metrics)

On resume, load the stored state into the BatchAugment (``augment.load_state_dict``) before
building the next AugmentAhead.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Union

import torch

__all__ = ["AugmentAhead"]


class _Launched:
    """One batch whose augmentation is queued: outputs, the generator state before its draws,
    and (CUDA) the event that marks the end of its work on the side stream."""

    __slots__ = ("outputs", "state", "done")

    def __init__(self, outputs: tuple, state: dict, done: Optional[torch.cuda.Event]):
        self.outputs, self.state, self.done = outputs, state, done


class AugmentAhead:
    """Iterates ``(x1, x2, labels)``: the loader's batches, augmented one batch ahead.

    Args:
        batches: iterable of ``(view1, view2, labels)``: uint8 ``[B, 3, H, W]`` views (any
            strides; they may live in the loader's rotating buffers, valid until the next
            batch is drawn) and labels ``[B]`` (e.g. a
            :class:`~eigenmap.data.ffcv_loaders.TwoViewLoader` after ``set_epoch``).
        augment: the :class:`~eigenmap.data.augment.BatchAugment`; its generator advances as
            if the batches were augmented one by one.
        device: the training device; defaults to (and must equal) ``augment.device``.

    Yields ``x1, x2`` float32 ``[B, 3, H, W]`` (``augment``'s output) and ``labels`` ``[B]``
    on the device (a copy: they are handed out after the next batch was drawn). Each
    ``iter()`` starts a pass over ``batches``; stopping early (``break``) closes the source
    iterator (the FFCV loader stops its thread in its ``finally``) and rewinds the generator
    over the batch augmented ahead but never handed out.
    """

    def __init__(self, batches: Iterable, augment: Any, device: Union[str, torch.device, None] = None):
        self.batches = batches
        self.augment = augment
        self.device = augment.device if device is None else torch.device(device)
        if self.device != augment.device:
            raise ValueError(f"device {self.device} differs from the augmentation's device {augment.device}")
        self._next_state: Optional[dict] = None

    def augment_state(self) -> dict:
        """The augmentation generator's position for the first batch not yet handed out.

        Store this in a checkpoint taken after the step of the last batch handed out; loading
        it into a fresh ``BatchAugment`` (``load_state_dict``) augments that next batch exactly
        as this run does.
        """
        # None: no batch is augmented ahead (before the first batch, after the last, after a
        # stop), so the generator itself is at the right position
        return self.augment.state_dict() if self._next_state is None else self._next_state

    # the checkpoint writer asks the augmentation object for ``state_dict()``: this wrapper
    # can be handed to it in place of the BatchAugment
    state_dict = augment_state

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        source = iter(self.batches)
        ahead = None
        try:
            ahead = self._launch(next(source, None), stream)
            while ahead is not None:
                current = ahead
                ahead = None
                if current.done is not None:
                    # the step on the main stream waits for this batch's augmentation; and
                    # because the loader guards its buffers with events on the main stream,
                    # this also keeps them from being refilled while the side stream reads them
                    torch.cuda.current_stream(self.device).wait_event(current.done)
                ahead = self._launch(next(source, None), stream)  # runs during the consumer's step
                # while suspended here, the generator has moved past the batch augmented ahead
                self._next_state = ahead.state if ahead is not None else None
                yield current.outputs
        finally:
            if ahead is not None:  # stopped early: un-draw the batch nobody will see
                self.augment.load_state_dict(ahead.state)
            self._next_state = None
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _launch(self, batch: Optional[tuple], stream: Optional[torch.cuda.Stream]) -> Optional[_Launched]:
        """Queue the augmentation of ``batch`` (None at the end of the source)."""
        if batch is None:
            return None
        view1, view2, labels = batch
        state = self.augment.state_dict()
        if stream is None:
            x1, x2 = self.augment(view1, view2)
            return _Launched((x1, x2, labels.to(self.device).clone()), state, None)
        main = torch.cuda.current_stream(self.device)
        # wait for everything queued so far on the main stream: the loader's copies of this
        # batch, and step n - 1 (this batch, n + 1, is meant to overlap step n, queued next)
        stream.wait_stream(main)
        with torch.cuda.stream(stream):
            x1, x2 = self.augment(view1, view2)
            labels = labels.to(self.device, non_blocking=True).clone()
            done = torch.cuda.Event()
            done.record(stream)
        for t in (x1, x2, labels):
            t.record_stream(main)  # made on the side stream, used on the main one: keep the memory until then
        return _Launched((x1, x2, labels), state, done)
