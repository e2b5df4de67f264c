"""Fixtures shared by the whole suite.

``shared_dir`` is ``../shared`` beside the checkout (or $EIGENMAP_SHARED); tests that need its
data or reference figures skip with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before any test imports deepspeed

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("EIGENMAP_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_dir()


@pytest.fixture(scope="session")
def reference_cases(shared_dir: Path) -> list[dict]:
    """The official implementation's NeuralEF figures (../shared/reference)."""
    import json

    path = shared_dir / "reference" / "neuralef_reference_cases.json"
    if not path.is_file():
        pytest.skip(f"reference figures not found at {path} (set EIGENMAP_SHARED to the shared folder)")
    return json.loads(path.read_text())["cases"]


@pytest.fixture(scope="session")
def imagenette_dir(shared_dir: Path) -> Path:
    """../shared/data/imagenette2-96 (ImageFolder layout, train/ and val/)."""
    path = Path(os.environ.get("EIGENMAP_SHARED_DATA", shared_dir / "data")) / "imagenette2-96"
    if not (path / "train").is_dir():
        pytest.skip(f"Imagenette data not found at {path} (set EIGENMAP_SHARED_DATA to the data folder)")
    return path


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
    """A small real FFCV file (training and launcher tests share it)."""
    return make_small_beton(imagenette_dir, tmp_path_factory.getbasetemp())
