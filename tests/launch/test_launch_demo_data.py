"""The demo's data: the seeded holdout of one ImageFolder, and a small folder's batch."""

from __future__ import annotations

import numpy as np
from PIL import Image

from eigenmap.data import write_beton
from eigenmap.config import load_config
from launch.cmd_demo import DEMO_CONFIG, _fitted_batch, _split_by_holdout


def _folder(root, sizes: dict[str, int]):
    for name, count in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_class_too_small_to_hold_out_keeps_its_label_in_the_validation_file(tmp_path):
    # 20% of 2 files rounds to none: without its empty val/ folder, "c" would become label 1 there
    src = _folder(tmp_path / "src", {"a": 10, "b": 2, "c": 10})
    _split_by_holdout(src, tmp_path / "split", 0.2, seed=0)
    manifests = [write_beton(tmp_path / "split" / s, tmp_path / f"{s}.beton", workers=1) for s in ("train", "val")]
    assert manifests[0]["classes"] == manifests[1]["classes"] == ["a", "b", "c"]
    assert manifests[1]["counts"] == {"a": 2, "b": 0, "c": 2}
    assert manifests[0]["counts"] == {"a": 8, "b": 2, "c": 8}


def test_the_holdout_is_the_same_for_the_same_seed_and_moves_with_it(tmp_path):
    src = _folder(tmp_path / "src", {"a": 20, "b": 20})
    held = []
    for run, seed in enumerate((0, 0, 1)):
        _split_by_holdout(src, tmp_path / f"split{run}", 0.25, seed=seed)
        held.append(sorted(str(p.relative_to(tmp_path / f"split{run}" / "val"))
                           for p in (tmp_path / f"split{run}" / "val").rglob("*.png")))
    assert len(held[0]) == 10 and held[0] == held[1] and held[0] != held[2]


def test_a_small_training_set_lowers_the_demo_batch_to_fit_it():
    cfg = load_config(DEMO_CONFIG, [])  # 2 workers x 64
    assert _fitted_batch(81, cfg) == ["data.batch_size_per_worker=40"]
    assert _fitted_batch(128, cfg) == [] and _fitted_batch(60_000, cfg) == []
    assert _fitted_batch(1, cfg) == []  # fewer images than workers: the loader's error names it
    assert _fitted_batch(81, load_config(DEMO_CONFIG, ["dist.num_workers=3"])) == ["data.batch_size_per_worker=27"]
