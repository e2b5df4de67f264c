"""``eigenmap probe`` on a pair that is valid but looks wrong says so, and records it.

The command runs in this process on folders of seeded arrays (``codes.npy``, ``labels.npy``),
kNN only, with ``--out``: no run, no extraction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from launch.cli import main as eigenmap


def _arrays(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    codes = rng.standard_normal((n, 8)).astype(np.float32) + np.eye(4, 8, dtype=np.float32)[labels] * 3
    folder.mkdir(parents=True)
    np.save(folder / "codes.npy", codes)
    np.save(folder / "labels.npy", labels)
    return folder


def _probe(train: Path, val: Path, out: Path) -> int:
    return eigenmap(["probe", "--train", str(train), "--val", str(val), "--knn-only", "--knn-k", "5",
                     "--out", str(out)])


def test_a_training_set_smaller_than_the_validation_set_is_warned_about_as_a_likely_swap(tmp_path, capsys):
    small, large = _arrays(tmp_path / "small", 40, 0), _arrays(tmp_path / "large", 200, 1)
    assert _probe(small, large, tmp_path / "swapped") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "swapped" in err and "40 images" in err
    assert len(json.loads((tmp_path / "swapped" / "probe.json").read_text())["warnings"]) == 1

    assert _probe(large, small, tmp_path / "right") == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "right" / "probe.json").read_text())["warnings"] == []
