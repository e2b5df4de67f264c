"""Evaluation sets described and checked before any array is made: anyone's arrays, content ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from eigenmap.eval.inputs import EvalInputError, check_pair, describe, load_arrays, require_arrays


def write_arrays(folder: Path, n: int = 50, d: int = 8, *, classes: int = 4, multi: bool = False, seed: int = 0,
                 codes: bool = True, features: bool = False, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    if codes:
        np.save(folder / "codes.npy", rng.normal(size=(n, d)).astype(dtype))
    if features:
        np.save(folder / "features.npy", rng.normal(size=(n, 2 * d)).astype(dtype))
    labels = (rng.random((n, classes)) < 0.4).astype(np.uint8) if multi else rng.integers(0, classes, n)
    np.save(folder / "labels.npy", labels)
    return folder


def test_a_folder_of_arrays_is_described_with_its_widths_labels_and_a_content_id(tmp_path):
    inp = describe(write_arrays(tmp_path / "a", features=True), "--database")
    assert inp.kind == "arrays" and inp.num_images == 50 and inp.widths == {"codes": 8, "features": 16}
    assert inp.label_kind == "single" and inp.classes is None and inp.identity.startswith("arrays:")
    arrays = load_arrays(inp)
    assert arrays.codes.shape == (50, 8) and arrays.features.shape == (50, 16) and arrays.labels.shape == (50,)


def test_a_multi_label_folder_keeps_its_flags_and_their_count(tmp_path):
    inp = describe(write_arrays(tmp_path / "m", multi=True, classes=5), "--queries")
    assert inp.label_kind == "multi" and inp.num_labels == 5
    assert load_arrays(inp).labels.shape == (50, 5)


def test_a_byte_copy_under_another_name_is_the_same_set_and_is_refused_naming_both_paths(tmp_path):
    first = describe(write_arrays(tmp_path / "val"), "--database")
    shutil.copytree(tmp_path / "val", tmp_path / "valcopy")
    second = describe(tmp_path / "valcopy", "--queries")
    assert first.identity == second.identity
    with pytest.raises(EvalInputError) as e:
        check_pair(first, second, "every query would find itself first")
    message = str(e.value)
    assert "are the same images" in message and str(tmp_path / "val") in message and str(tmp_path / "valcopy") in message
    assert "every query would find itself first" in message and "accepted: " in message


def test_two_different_sets_pass_and_give_their_label_count(tmp_path):
    first = describe(write_arrays(tmp_path / "db", classes=4), "--database")
    second = describe(write_arrays(tmp_path / "q", classes=4, seed=1, n=20), "--queries")
    assert check_pair(first, second, "x") == 4


@pytest.mark.parametrize("case, expected", [
    ("nan", "row 7 holds NaN or inf"),
    ("dtype", "is int64 of shape [50, 8]; accepted: [N, d] float16, float32, float64"),
    ("rows", "has 49 rows of width 8 but"),
    ("labels", "accepted: [N] integer class indices, or [N, C] 0/1 flags"),
    ("flags", "values other than 0 and 1"),
    ("negative", "holds a negative label"),
    ("empty", "is a folder without features.json, codes.npy/features.npy or labels.npy"),
])
def test_a_malformed_arrays_folder_is_refused_naming_the_file_and_what_is_accepted(tmp_path, case, expected):
    folder = write_arrays(tmp_path / "a")
    codes = np.load(folder / "codes.npy")
    if case == "nan":
        codes[7, 3] = np.nan
        np.save(folder / "codes.npy", codes)
    elif case == "dtype":
        np.save(folder / "codes.npy", codes.astype(np.int64))
    elif case == "rows":
        np.save(folder / "codes.npy", codes[:49])
    elif case == "labels":
        np.save(folder / "labels.npy", np.zeros((50, 2, 2)))
    elif case == "flags":
        np.save(folder / "labels.npy", np.full((50, 3), 2, dtype=np.uint8))
    elif case == "negative":
        np.save(folder / "labels.npy", -np.ones(50, dtype=np.int64))
    elif case == "empty":
        (folder / "codes.npy").unlink()
    with pytest.raises(EvalInputError) as e:
        describe(folder, "--database")
    assert expected in str(e.value) and "--database" in str(e.value)
    if case not in ("empty",):
        assert str(folder) in str(e.value)


def test_a_missing_path_and_a_file_without_manifest_are_refused_naming_what_is_accepted(tmp_path):
    with pytest.raises(EvalInputError, match="does not exist; accepted: a .beton written by `eigenmap prepare`"):
        describe(tmp_path / "vall.beton", "--queries")
    (tmp_path / "plain.beton").write_bytes(b"not a beton")
    with pytest.raises(EvalInputError, match="manifest .* not found"):
        describe(tmp_path / "plain.beton", "--queries")


def test_sets_labelled_differently_are_refused(tmp_path):
    single = describe(write_arrays(tmp_path / "s"), "--database")
    multi = describe(write_arrays(tmp_path / "m", multi=True, seed=1), "--queries")
    with pytest.raises(EvalInputError, match="different label kinds"):
        check_pair(single, multi, "x")
    other = describe(write_arrays(tmp_path / "m6", multi=True, classes=6, seed=2), "--database")
    with pytest.raises(EvalInputError, match="4 and 6 label flags per image"):
        check_pair(describe(tmp_path / "m", "--queries"), other, "x")


def test_a_folder_without_the_array_asked_for_is_refused(tmp_path):
    inp = describe(write_arrays(tmp_path / "c"), "--train")
    require_arrays(inp, "codes")
    with pytest.raises(EvalInputError, match="has no features.npy"):
        require_arrays(inp, "features")


def test_a_beton_whose_manifest_records_no_checksum_is_refused_naming_the_command_that_writes_one(tmp_path):
    import json

    beton = tmp_path / "val.beton"
    beton.write_bytes(b"x" * 64)
    manifest = {"classes": ["a", "b"], "counts": {"a": 1, "b": 1}, "num_images": 2, "skipped": [],
                "max_resolution": None, "label_kind": "single", "num_labels": 2}
    (tmp_path / "val.beton.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalInputError, match=r"--queries '.*val\.beton': its manifest records no sha256.*eigenmap "
                                             r"prepare"):
        describe(beton, "--queries")


def test_a_feature_folder_whose_sidecar_names_no_dataset_checksum_is_refused(tmp_path):
    import json

    folder = write_arrays(tmp_path / "f", features=True)
    shapes = {name: list(np.load(folder / f"{name}.npy").shape) for name in ("features", "codes", "labels")}
    sidecar = {"shapes": shapes, "dataset": {"path": "train.beton", "classes": ["0", "1", "2", "3"]}, "step": 3}
    (folder / "features.json").write_text(json.dumps(sidecar))
    with pytest.raises(EvalInputError, match=r"--train '.*f': features\.json records no sha256.*eigenmap extract"):
        describe(folder, "--train")
