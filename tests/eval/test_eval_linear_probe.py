"""Linear probe: it learns a linear structure to the accuracy it must, and reports final vs best."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eigenmap.eval.linear_probe import Standardiser, topk_accuracy, train_probe


def _linear_problem(n: int, seed: int, dim: int = 24, classes: int = 5, scale: float = 50.0):
    """Labels = argmax of a fixed linear map: a linear classifier can be exact. The features are
    scaled and offset (as raw encoder features are), which the standardisation must undo."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(123).normal(size=(dim, classes))
    x = rng.normal(size=(n, dim))
    y = (x @ w).argmax(1)
    return (scale * x + 7.0).astype(np.float32), y


def test_the_probe_recovers_a_linearly_separable_structure():
    train_x, train_y = _linear_problem(3000, seed=0)
    val_x, val_y = _linear_problem(1000, seed=1)
    result = train_probe(train_x, train_y, val_x, val_y, num_classes=5, epochs=30, lr=0.1, batch_size=256)
    # the classes are the cells of a linear map: only samples near a boundary can be missed
    assert result.top1 >= 95.0, result.history[-3:]
    assert result.top5 == 100.0  # 5 classes
    assert result.epochs == 30 and len(result.history) == 30
    assert result.best_top1 >= result.top1 and 1 <= result.best_epoch <= 30
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_random_labels_stay_at_chance_on_validation():
    train_x, _ = _linear_problem(2000, seed=0)
    val_x, _ = _linear_problem(1000, seed=1)
    rng = np.random.default_rng(5)
    result = train_probe(train_x, rng.integers(0, 5, 2000), val_x, rng.integers(0, 5, 1000), num_classes=5,
                         epochs=5)
    assert result.top1 < 30.0  # chance is 20%


def test_a_feature_constant_in_training_but_active_on_validation_does_not_swamp_the_probe():
    # a ReLU channel that no training image activates (all zeros) but some validation images do
    train_x, train_y = _linear_problem(3000, seed=0)
    val_x, val_y = _linear_problem(1000, seed=1)
    dead = np.zeros((3000, 1), np.float32)
    woken = np.random.default_rng(2).uniform(0.0, 5.0, (1000, 1)).astype(np.float32)
    result = train_probe(np.hstack([train_x, dead]), train_y, np.hstack([val_x, woken]), val_y, num_classes=5,
                         epochs=30, lr=0.1, batch_size=256)
    assert result.top1 >= 95.0, result.history[-3:]


def test_standardiser_reads_a_memory_map_in_chunks(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    s = Standardiser.fit(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk_rows=64)
    assert torch.allclose(s.mean, torch.from_numpy(x.mean(0)), atol=1e-5)
    assert torch.allclose(s.std, torch.from_numpy(x.std(0)), atol=1e-5)


def test_topk_accuracy_counts_a_hit_in_the_first_k():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    assert topk_accuracy(logits, torch.tensor([1, 1]), ks=(1, 2)) == [50.0, 100.0]


def test_labels_outside_the_classes_are_named():
    x, y = _linear_problem(10, seed=0)
    with pytest.raises(ValueError, match=r"train labels span \[.*\]; accepted: \[0, 2\]"):
        train_probe(x, y, x, np.zeros(10, dtype=int), num_classes=3, epochs=1)
