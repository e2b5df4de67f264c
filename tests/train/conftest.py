"""Fixtures of the training tests: a tiny config (the small FFCV file is in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")


TINY_CONFIG = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 64, projector_out_dim: 64, num_classes: 10}
loss: {alpha: 0.01}
optim: {name: lars, base_lr: 0.3, warmup_epochs: 1}
data: {resolution: 32, eval_resize: 32, batch_size_per_worker: 16, loader_workers: 1, synthetic_images: 256}
dist: {num_workers: 1, cpus_per_worker: 1, zero_stage: 0, max_failures: 0}
train: {epochs: 2, log_every_steps: 2, checkpoint_every_steps: 4, keep_checkpoints: 2, progress_bar: false}
"""


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    """A ResNet-18 / 32 px / k = 64 config file (override data.train_path and train.run_dir)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path
