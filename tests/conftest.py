"""Fixtures shared by the whole suite.

``shared_dir`` is ``../shared`` beside the checkout (or $EIGENMAP_SHARED). A test that needs its
data or reference figures skips with the reason when they are absent, except under ``CI=true``:
CI always has the shared folder, so there a missing one fails the test instead of hiding it.
"""

from __future__ import annotations

import os
from pathlib import Path

import shutil

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before any test imports deepspeed

REPO_ROOT = Path(__file__).resolve().parents[1]


def require_shared(path: Path, what: str, how: str) -> None:
    """Skip (or, under ``CI=true``, fail) the calling test when ``path`` does not exist."""
    if path.exists():
        return
    reason = f"{what} not found at {path} ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI always has the shared folder, so this is a failure, not a skip")
    pytest.skip(reason)


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
    require_shared(path, "reference figures", "set EIGENMAP_SHARED to the shared folder")
    return json.loads(path.read_text())["cases"]


@pytest.fixture(scope="session")
def imagenette_dir(shared_dir: Path) -> Path:
    """../shared/data/imagenette2-96 (ImageFolder layout, train/ and val/)."""
    path = Path(os.environ.get("EIGENMAP_SHARED_DATA", shared_dir / "data")) / "imagenette2-96"
    require_shared(path / "train", "Imagenette data", "set EIGENMAP_SHARED_DATA to the data folder")
    return path


@pytest.fixture(scope="session")
def imagenette_subset(imagenette_dir: Path, tmp_path_factory) -> Path:
    """An ImageFolder with the first 40 train images of 4 Imagenette classes (160 images)."""
    root = tmp_path_factory.mktemp("imagenette_subset")
    classes = sorted(p.name for p in (imagenette_dir / "train").iterdir() if p.is_dir())[:4]
    for cls in classes:
        (root / cls).mkdir()
        for f in sorted((imagenette_dir / "train" / cls).iterdir())[:40]:
            shutil.copy(f, root / cls / f.name)
    return root


@pytest.fixture(scope="session")
def subset_beton(imagenette_subset: Path, tmp_path_factory) -> Path:
    """``imagenette_subset`` written by our writer (JPEG, 2 workers): the data tests' and the twin's."""
    from eigenmap.data import write_beton

    path = tmp_path_factory.mktemp("subset_beton") / "subset.beton"
    write_beton(imagenette_subset, path, workers=2)
    return path


def make_small_beton(imagenette_dir: Path, base: Path, per_class: int = 16, max_resolution: int = 40,
                     split: str = "train") -> Path:
    """10 Imagenette classes x ``per_class`` images of ``split`` at most ``max_resolution`` px,
    written once per session under ``base`` (the session's pytest temp root), whichever test
    asks first."""
    out = base / "issue4-data" / f"{split}.beton"
    if out.is_file() and Path(str(out) + ".json").is_file():
        return out
    subset = out.parent / f"subset-{split}"
    for cls in sorted((imagenette_dir / split).iterdir()):
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
    """A small real FFCV file: 160 training images (training and launcher tests share it)."""
    return make_small_beton(imagenette_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def small_val_beton(imagenette_dir: Path, tmp_path_factory) -> Path:
    """80 Imagenette validation images (10 classes x 8), the evaluation tests' held-out set."""
    return make_small_beton(imagenette_dir, tmp_path_factory.getbasetemp(), per_class=8, split="val")


def pytest_collection_modifyitems(config, items):
    """Modules with multi-process tests (Ray, DeepSpeed, gloo) run first.

    ``make test`` runs two pytest-xdist workers that take whole modules (``--dist loadfile``);
    starting the long modules first keeps the run from ending on one worker while the other
    idles. The order within a module is kept, so its module-scoped fixtures are set up once.
    """
    heavy = {item.path for item in items if item.get_closest_marker("multiprocess")}
    items.sort(key=lambda item: item.path not in heavy)
