"""Fixtures of the training tests: a tiny config (the small FFCV file is in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker_helpers import TINY_CONFIG

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    """A ResNet-18 / 32 px / k = 64 config file (override data.train_path and train.run_dir)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="session")
def twelve_class_beton(tmp_path_factory) -> Path:
    """A real FFCV file (our writer, with its manifest) of 12 classes x 2 generated images."""
    import numpy as np
    from PIL import Image

    from eigenmap.data import write_beton

    root = tmp_path_factory.mktemp("twelve_classes")
    for c in range(12):
        (root / "src" / f"class{c:02d}").mkdir(parents=True)
        for i in range(2):
            pixels = np.full((24, 24, 3), 10 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / "src" / f"class{c:02d}" / f"{i}.png")
    out = root / "x.beton"
    write_beton(root / "src", out, workers=1)
    return out
