"""The classification protocol of a frozen encoder: a linear probe and a weighted kNN.

One function gives the figures of one (train, val) pair, so ``eigenmap probe``, the demo and
``tools/bench_quality.py`` score every run the same way:

- linear probe on the training set's encoder features [N, F] (standardised with the training
  set's statistics; or, with ``train_batches``, new augmented views each epoch), top-1/top-5 on
  the validation set after the final epoch;
- weighted kNN top-1 (cosine, exp(sim / T) votes) on the features and on the codes [N, k].
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from eigenmap.config import Config, EvalConfig
from eigenmap.data import build_train_loader
from eigenmap.data.ffcv_loaders import normalisation_rows, normalise_uint8
from eigenmap.eval.features import FeatureSet
from eigenmap.eval.knn import knn_top1
from eigenmap.eval.linear_probe import Batches, Standardiser, train_probe

__all__ = ["probe_and_knn", "augmented_batches", "PROTOCOLS"]

PROTOCOLS = {"cached": "cached centre-crop features, standardised",
             "augmented": "augmented: RandomResizedCrop + flip views through the frozen encoder each epoch"}


def probe_and_knn(train: FeatureSet, val: FeatureSet, settings: EvalConfig, *, num_classes: int, seed: int,
                  device: torch.device, epochs: Optional[int] = None, lr: Optional[float] = None,
                  ks: Optional[Sequence[int]] = None, train_batches: Optional[Batches] = None,
                  knn_only: bool = False, knn_memory_budget_bytes: Optional[int] = None) -> dict:
    """The probe and kNN figures of one pair of feature sets.

    Args:
        train, val: the sets' arrays (features [N, F], codes [N, k], labels [N]).
        settings: the run's ``eval`` section (probe epochs, lr, weight decay, batch; kNN k's, T).
        num_classes: C; labels are in [0, C).
        seed: the probe's initialisation and shuffling.
        epochs, lr, ks: override ``settings`` (None: the run's values).
        train_batches: the augmented protocol's ``epoch -> (features, labels)`` batches
            (:func:`augmented_batches`); default: the cached training features.
        knn_only: skip the linear probe.
        knn_memory_budget_bytes: bytes of one block of training rows and its scores in the kNN
            (None: :data:`eigenmap.eval.knn.DEFAULT_MEMORY_BUDGET_BYTES`).

    Returns:
        ``{"num_classes", "linear_probe": {...} or None, "knn": {"temperature", "ks",
        "top1": {"features": {k: %}, "codes": {k: %}}, "seconds"}}`` (k keys are strings).
    """
    figures = {"num_classes": num_classes, "linear_probe": None}
    if not knn_only:
        epochs, lr = epochs or settings.probe_epochs, lr or settings.probe_lr
        started = time.perf_counter()
        probe = train_probe(train.features, train.labels, val.features, val.labels, num_classes=num_classes,
                            epochs=epochs, lr=lr, weight_decay=settings.probe_weight_decay,
                            batch_size=settings.probe_batch_size, seed=seed, device=device,
                            train_batches=train_batches, standardiser=Standardiser.fit(train.features))
        figures["linear_probe"] = {
            "protocol": PROTOCOLS["augmented" if train_batches is not None else "cached"],
            "epochs": epochs, "lr": lr, "weight_decay": settings.probe_weight_decay,
            "batch_size": settings.probe_batch_size, "momentum": 0.9, "schedule": "cosine to 0", **probe.to_dict(),
            "seconds": time.perf_counter() - started}
    ks = tuple(ks or settings.knn_ks)
    budget = {} if knn_memory_budget_bytes is None else {"memory_budget_bytes": knn_memory_budget_bytes}
    started = time.perf_counter()
    top1 = {name: {str(k): v for k, v in knn_top1(getattr(train, name), train.labels, getattr(val, name), val.labels,
                                                  ks=ks, temperature=settings.knn_temperature,
                                                  num_classes=num_classes, device=device,
                                                  **budget).items()}
            for name in ("features", "codes") if getattr(train, name) is not None and getattr(val, name) is not None}
    figures["knn"] = {"temperature": settings.knn_temperature, "ks": list(ks), "top1": top1,
                      "seconds": time.perf_counter() - started}
    return figures


def augmented_batches(model, cfg: Config, beton: Path, batch_size: int, device: torch.device) -> Batches:
    """The paper's probe protocol: each epoch one random-resized crop + flip of every training
    image through the frozen encoder (view 1 of the training loader, no colour augmentation).

    Returns:
        ``epoch -> iterable of (features [b, F] float32, labels [b] int64)`` on ``device``.
    """
    data_cfg = dataclasses.replace(cfg.data, batch_size_per_worker=batch_size)
    loader = build_train_loader(data_cfg, beton, rank=0, world_size=1, seed=cfg.train.seed + 1, device=device)
    rows = normalisation_rows(cfg.data.mean, cfg.data.std, cfg.data.resolution, device=device)

    def epoch(e: int):
        loader.set_epoch(e)
        for view1, _, labels in loader:
            x = normalise_uint8(view1.to(device), *rows)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                feats = model.backbone(x).float()
            yield feats, labels.to(device)

    return epoch
