"""Linear probe: a linear classifier trained on frozen encoder features.

The default runs on cached centre-crop features, standardised with the training set's mean and
std (one pass over the encoder, then seconds per epoch). :func:`train_probe` also takes a
``train_batches`` callable for the paper's protocol, where each epoch draws new
random-resized-crop + flip views through the frozen encoder (``eigenmap probe --augmented``).
SGD with momentum 0.9, weight decay, a cosine schedule over every step; top-1 and top-5 on the
validation set after the final epoch, and the best epoch's top-1 reported as such.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.progress import Progress


__all__ = ["ProbeResult", "Standardiser", "train_probe", "topk_accuracy"]

log = logging.getLogger(__name__)

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class ProbeResult:
    """``top1``/``top5``: validation accuracy (%) after the FINAL epoch; ``best_top1`` and
    ``best_epoch`` (1-based): the best epoch's top-1, for reference only (choosing it would
    select on the validation set). ``history``: per epoch, train loss and val top-1/top-5."""

    top1: float
    top5: float
    best_top1: float
    best_epoch: int
    epochs: int
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Standardiser(nn.Module):
    """x -> (x - mean) / std with the statistics of the training features. A feature constant
    over the training set (std <= 1e-6, e.g. a ReLU channel no training image activates) is only
    centred, as scikit-learn's StandardScaler does: divided by a floor, its first non-zero value
    on a validation image would swamp every logit."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", torch.where(std > 1e-6, std, torch.ones_like(std)))

    @classmethod
    def fit(cls, x: Union[np.ndarray, torch.Tensor], chunk_rows: int = 65536) -> "Standardiser":
        """Mean and std of [N, F] features, read in chunks (a memory map stays on disk), in float64."""
        n, total, squares = 0, None, None
        for start in range(0, len(x), chunk_rows):
            block = torch.from_numpy(np.array(x[start:start + chunk_rows], dtype=np.float64))  # a copy: maps are read-only
            total = block.sum(0) if total is None else total + block.sum(0)
            squares = block.pow(2).sum(0) if squares is None else squares + block.pow(2).sum(0)
            n += len(block)
        mean = total / n
        var = (squares / n - mean.pow(2)).clamp(min=0)
        return cls(mean.float(), var.sqrt().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent: [Q, C] logits, [Q] labels (k capped at C)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return [100.0 * float(hits[:, :min(k, logits.shape[1])].any(dim=1).float().mean()) for k in ks]


def _feature_batches(x: Union[np.ndarray, torch.Tensor], y: Union[np.ndarray, torch.Tensor], batch_size: int,
                     seed: int, device: torch.device) -> Batches:
    """An epoch's shuffled batches of cached features (rows of a memory map read per batch)."""
    n = len(y)
    labels = torch.from_numpy(np.array(y, dtype=np.int64))

    def epoch(e: int):
        order = np.random.default_rng([seed, e]).permutation(n)
        for start in range(0, n, batch_size):
            rows = np.sort(order[start:start + batch_size])  # sorted: sequential reads of a memory map
            xb = torch.as_tensor(np.asarray(x[rows]), dtype=torch.float32, device=device)
            yield xb, labels[rows].to(device)

    return epoch


@torch.no_grad()
def _evaluate(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, float]:
    logits = torch.cat([head(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    top1, top5 = topk_accuracy(logits, y)
    return top1, top5


def train_probe(train_x: Union[np.ndarray, torch.Tensor, None], train_y: Union[np.ndarray, torch.Tensor],
                val_x: Union[np.ndarray, torch.Tensor], val_y: Union[np.ndarray, torch.Tensor], *,
                num_classes: int, epochs: int = 100, lr: float = 0.1, weight_decay: float = 1e-6,
                batch_size: int = 256, momentum: float = 0.9, seed: int = 0,
                device: Union[str, torch.device] = "cpu", train_batches: Optional[Batches] = None,
                standardiser: Optional[Standardiser] = None) -> ProbeResult:
    """Train a linear classifier on frozen features and evaluate it on the validation set.

    Args:
        train_x: [N, F] cached training features (ignored when ``train_batches`` is given).
        train_y: [N] int labels in [0, num_classes).
        val_x, val_y: [Q, F] validation features and [Q] labels.
        num_classes: C, the classifier's outputs.
        epochs, lr, weight_decay, batch_size, momentum: SGD with a per-step cosine schedule
            from ``lr`` to 0.
        seed: initialisation and shuffling.
        train_batches: ``epoch -> iterable of ([b, F] features, [b] labels)``, e.g. new augmented
            views through the frozen encoder each epoch; default: shuffled cached features.
        standardiser: feature standardisation; default: fitted on ``train_x``.

    Returns:
        :class:`ProbeResult`.

    Raises:
        ValueError: empty sets, widths that differ, labels outside [0, num_classes).
    """
    device = torch.device(device)
    train_labels = torch.from_numpy(np.array(train_y, dtype=np.int64))  # copies: memory maps are read-only
    val_feats = torch.from_numpy(np.array(val_x, dtype=np.float32)).to(device)
    val_labels = torch.from_numpy(np.array(val_y, dtype=np.int64)).to(device)
    if len(train_labels) == 0 or len(val_labels) == 0:
        raise ValueError(f"the probe needs training and validation samples; got {len(train_labels)} and "
                         f"{len(val_labels)}")
    for name, labels in (("train", train_labels), ("val", val_labels)):
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"{name} labels span [{int(labels.min())}, {int(labels.max())}]; accepted: "
                             f"[0, {num_classes - 1}] for num_classes={num_classes}")
    if standardiser is None:
        if train_x is None:
            raise ValueError("train_x is needed to fit the standardiser (or pass standardiser=)")
        standardiser = Standardiser.fit(train_x)
    if train_x is not None and np.shape(train_x)[1] != val_feats.shape[1]:
        raise ValueError(f"train features have width {np.shape(train_x)[1]}, val features {val_feats.shape[1]}; "
                         "they must come from the same encoder")
    if train_batches is None:
        train_batches = _feature_batches(train_x, train_labels, batch_size, seed, device)
    torch.manual_seed(seed)
    linear = nn.Linear(val_feats.shape[1], num_classes)
    nn.init.zeros_(linear.bias)
    nn.init.normal_(linear.weight, std=0.01)
    head = nn.Sequential(standardiser, linear).to(device)
    optimizer = torch.optim.SGD(linear.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_labels) / batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    history, best = [], (-1.0, 0)
    progress = Progress(epochs, "linear probe", unit="epoch", every_seconds=10.0, logger=log)
    for epoch in range(epochs):
        head.train()
        losses = []
        for xb, yb in train_batches(epoch):
            for g in optimizer.param_groups:  # cosine from lr to 0 over all steps
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
            loss = F.cross_entropy(head(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            step += 1
        head.eval()
        top1, top5 = _evaluate(head, val_feats, val_labels)
        history.append({"epoch": epoch + 1, "train_loss": float(torch.stack(losses).mean()), "val_top1": top1,
                        "val_top5": top5})
        if top1 > best[0]:
            best = (top1, epoch + 1)
        progress.update(1, f"train loss {history[-1]['train_loss']:.4f}, val top-1 {top1:.2f}")
    progress.close()
    return ProbeResult(top1=history[-1]["val_top1"], top5=history[-1]["val_top5"], best_top1=best[0],
                       best_epoch=best[1], epochs=epochs, history=history)
