"""Fixtures of the training tests: one small FFCV file per session, and a tiny config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def make_small_beton(imagenette_dir: Path, base: Path, per_class: int = 16, max_resolution: int = 40) -> Path:
    """10 Imagenette classes x ``per_class`` images at most ``max_resolution`` px, written once
    per session under ``base`` (the session's pytest temp root), whichever test asks first."""
    out = base / "issue4-data" / "train.beton"
    if out.is_file() and Path(str(out) + ".json").is_file():
        return out
    subset = out.parent / "subset"
    for cls in sorted((imagenette_dir / "train").iterdir()):
        (subset / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            link = subset / cls.name / f.name
            if not link.exists():
                link.symlink_to(f)
    from eigenmap.data import write_beton

    write_beton(subset, out, max_resolution=max_resolution, workers=2, overwrite=True)
    return out


@pytest.fixture(scope="session")
def small_beton(imagenette_dir: Path, tmp_path_factory) -> Path:
    return make_small_beton(imagenette_dir, tmp_path_factory.getbasetemp())


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
