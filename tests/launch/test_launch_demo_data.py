"""The demo's data: the split folders of an ImageFolder tree or the seeded holdout of one folder, the
data files' reuse, and a small folder's batch."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from eigenmap.data import read_manifest, write_beton
from eigenmap.config import load_config
from launch.cmd_demo import DEMO_CONFIG, _fitted_batch, _prepare_data, _split_by_holdout


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


def test_the_holdout_counts_image_files_and_leaves_annotations_beside_them_in_train(tmp_path):
    src = _folder(tmp_path / "src", {"a": 10, "b": 10})
    for cls in ("a", "b"):
        for i in range(10):
            (src / cls / f"{i}.xml").write_text("<annotation/>")
    _split_by_holdout(src, tmp_path / "split", 0.2, seed=0)
    for cls in ("a", "b"):
        val = sorted(p.suffix for p in (tmp_path / "split" / "val" / cls).iterdir())
        train = sorted(p.suffix for p in (tmp_path / "split" / "train" / cls).iterdir())
        assert val == [".png"] * 2 and train == [".png"] * 8 + [".xml"] * 10


def test_a_small_training_set_lowers_the_demo_batch_to_fit_it():
    cfg = load_config(DEMO_CONFIG, [])  # 2 workers x 64
    assert _fitted_batch(81, cfg) == ["data.batch_size_per_worker=40"]
    assert _fitted_batch(128, cfg) == [] and _fitted_batch(60_000, cfg) == []
    assert _fitted_batch(1, cfg) == []  # fewer images than workers: the loader's error names it
    assert _fitted_batch(81, load_config(DEMO_CONFIG, ["dist.num_workers=3"])) == ["data.batch_size_per_worker=27"]


def _prepare(tmp_path, data, holdout=0.2, overrides=()):
    from launch.cli import main as eigenmap
    args = argparse.Namespace(data=data, out_dir=tmp_path / "demo", holdout=holdout)
    train, val, statement, _ = _prepare_data(args, eigenmap, load_config(DEMO_CONFIG, list(overrides)))
    return read_manifest(train), read_manifest(val), statement


def test_a_tree_with_train_and_test_folders_validates_on_test_with_the_class_folders_as_classes(tmp_path):
    # train/ and test/ (CIFAR-style dumps): "train" and "test" must not become two classes
    for split, count in (("train", 6), ("test", 2)):
        _folder(tmp_path / "tree" / split, {"a": count, "b": count, "c": count})
    train, val, statement = _prepare(tmp_path, tmp_path / "tree")
    assert train["classes"] == val["classes"] == ["a", "b", "c"]
    assert (train["num_images"], val["num_images"]) == (18, 6)
    assert "train/ trains and is the database; test/ validates and queries" in statement, statement


def test_a_tree_with_only_a_train_folder_splits_it_by_the_holdout(tmp_path):
    _folder(tmp_path / "tree" / "Train", {"a": 10, "b": 10})
    train, val, statement = _prepare(tmp_path, tmp_path / "tree", holdout=0.2)
    assert train["classes"] == val["classes"] == ["a", "b"]
    assert (train["num_images"], val["num_images"]) == (16, 4)
    assert "Train split by a seeded holdout" in statement, statement


def test_a_tree_with_a_validation_folder_but_no_training_folder_is_refused_naming_the_layouts(tmp_path):
    _folder(tmp_path / "tree" / "val", {"a": 2})
    _folder(tmp_path / "tree" / "other", {"a": 2})
    refusal = r"has val/ but no train/ beside it; accepted: train/ with one of val/.*holdout"
    with pytest.raises(ValueError, match=refusal):
        _prepare(tmp_path, tmp_path / "tree")


def test_a_folder_of_images_without_class_folders_is_refused_naming_it(tmp_path):
    _folder(tmp_path, {"flat": 3})
    with pytest.raises(ValueError, match=r"--data '.*/flat' has no class folders; accepted: a folder of class"):
        _prepare(tmp_path, tmp_path / "flat")


def test_a_changed_holdout_or_source_rebuilds_the_data_files_instead_of_reusing_them(tmp_path):
    src = _folder(tmp_path / "data", {"a": 8, "b": 8})
    assert _prepare(tmp_path, src, holdout=0.5)[1]["num_images"] == 8
    assert _prepare(tmp_path, src, holdout=0.25)[1]["num_images"] == 4
    assert _prepare(tmp_path, src, holdout=0.25, overrides=["train.seed=1"])[1]["num_images"] == 4
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a" / "new.png")  # an image added since
    assert _prepare(tmp_path, src, holdout=0.25, overrides=["train.seed=1"])[0]["num_images"] == 13
    # another folder with the same name: its images, not the first one's
    other = _folder(tmp_path / "elsewhere" / "data", {"a": 4, "b": 4, "c": 4})
    train, _, _ = _prepare(tmp_path, other, holdout=0.25)
    assert train["classes"] == ["a", "b", "c"] and train["num_images"] == 9


def test_a_run_trained_on_other_data_files_is_refused_before_the_files_are_rebuilt(tmp_path, capsys):
    from launch.cli import main as eigenmap
    src = _folder(tmp_path / "data", {"a": 8, "b": 8})
    _prepare(tmp_path, src, holdout=0.5)
    (tmp_path / "demo" / "run").mkdir()  # as a finished demo leaves it
    before = (tmp_path / "demo" / "data" / "data-val.beton").stat().st_mtime_ns
    assert eigenmap(["demo", "--data", str(src), "--holdout", "0.25", "--out-dir", str(tmp_path / "demo")]) == 2
    refusal = "holds a run whose data files were not made from this call's --data (as its files are now), --holdout"
    assert refusal in capsys.readouterr().err
    assert (tmp_path / "demo" / "data" / "data-val.beton").stat().st_mtime_ns == before
