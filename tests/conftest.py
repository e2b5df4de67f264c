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
