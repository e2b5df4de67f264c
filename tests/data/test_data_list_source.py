"""Image list files: parsing, bad lines named by line number, multi-hot labels through the
writer and both FFCV loaders, and the ``prepare --list`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eigenmap.data import SourceError, read_manifest, write_beton
from eigenmap.data.sources import ImageFiles, ListSpec
from eigenmap.data.writer import open_source
from multilabel_data import SIDE_PX, list_line, make_composites

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# Parsing (no image is opened here: the writer checks them)
# ------------------------------------------------------------------------------------------


def test_multi_hot_lines_are_read_and_bad_lines_named_by_number(tmp_path):
    listing = _write(tmp_path / "DB.txt", [
        "a.jpg 0 1 1 0",
        "b.jpg 1 0 0",  # 3 flags
        "",  # blank: ignored, still counted
        "c.jpg 0 2 0 0",  # not 0/1
        "d.jpg",  # no labels
        "e.jpg 0 0 0 1",
        "my file.jpg 0 0 0 1",  # a path with a space: 'file.jpg' reads as a flag
        "f.jpg 1 0 0 -1",
    ])
    source = ImageFiles.from_list(listing)
    assert source.label_kind == "multi" and source.num_labels == 4 and source.classes == ["0", "1", "2", "3"]
    assert source.line_numbers.tolist() == [1, 6]
    assert source.labels.dtype == np.uint8 and source.labels.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]
    assert [source.describe(i) for i in range(len(source))] == [str(tmp_path / "a.jpg"), str(tmp_path / "e.jpg")]
    bad = {b["line"]: b["reason"] for b in source.unread}
    assert sorted(bad) == [2, 4, 5, 7, 8]
    assert bad[2].startswith("3 label flags, expected 4 (the count on ")
    assert bad[4] == "flag '2' (the 2nd) is not 0 or 1"
    assert bad[5].startswith("no labels after the path")
    assert "a path with spaces?" in bad[7]
    assert bad[8] == "flag '-1' (the 4th) is not 0 or 1"
    assert all(b["path"].startswith(str(tmp_path)) for b in source.unread)


def test_the_flag_count_of_most_lines_is_c_unless_num_labels_says_otherwise(tmp_path):
    listing = _write(tmp_path / "DB.txt", ["a.jpg 0 1 1", "b.jpg 1 0 0", "c.jpg 1 0 0 1"])
    assert ImageFiles.from_list(listing).num_labels == 3 and len(ImageFiles.from_list(listing)) == 2
    chosen = ImageFiles.from_list(listing, num_labels=4)
    assert chosen.num_labels == 4 and chosen.line_numbers.tolist() == [3]
    assert {b["line"]: b["reason"] for b in chosen.unread}[1] == "3 label flags, expected 4 (--num-labels)"


def test_single_label_lists_take_c_from_the_largest_label_or_num_labels(tmp_path):
    listing = _write(tmp_path / "train.txt", ["a.jpg 3", "b.jpg 0", "c.jpg x", "d.jpg 1 2", "e.jpg 7"])
    source = ImageFiles.from_list(listing)
    assert source.label_kind == "single" and source.labels.dtype == np.int64
    assert source.labels.tolist() == [3, 0, 7] and source.classes == [str(i) for i in range(8)]
    bad = {b["line"]: b["reason"] for b in source.unread}
    assert bad == {3: "label 'x' is not a class index (an integer >= 0)",
                   4: "2 labels, expected 1 (the list is single-label: PATH LABEL on each line)"}
    capped = ImageFiles.from_list(listing, num_labels=5)
    assert capped.labels.tolist() == [3, 0] and capped.num_labels == 5
    assert {b["line"]: b["reason"] for b in capped.unread}[5] == "label 7 is not below the class count 5"


def test_relative_paths_start_at_root_and_absolute_paths_are_kept(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "lists").mkdir()
    listing = _write(tmp_path / "lists" / "Q.txt", ["x/a.jpg 0 1", f"{images / 'b.jpg'} 1 0"])
    source = ImageFiles.from_list(listing, root=images)
    assert [source.describe(i) for i in range(2)] == [str(images / "x" / "a.jpg"), str(images / "b.jpg")]
    assert ImageFiles.from_list(listing).describe(0) == str(tmp_path / "lists" / "x" / "a.jpg")  # default: the list's folder


def test_class_names_name_the_flags_and_must_match_their_count(tmp_path):
    listing = _write(tmp_path / "DB.txt", ["a.jpg 0 1 1", "b.jpg 1 0 0"])
    names = _write(tmp_path / "names.txt", ["person", "bicycle", "car"])
    assert ImageFiles.from_list(listing, class_names=names).classes == ["person", "bicycle", "car"]
    with pytest.raises(SourceError, match="names 3 classes but --num-labels is 4"):
        ImageFiles.from_list(listing, class_names=names, num_labels=4)
    _write(names, ["person", "car"])
    with pytest.raises(SourceError, match="no usable line"):  # every line has 3 flags, the names say 2
        ImageFiles.from_list(listing, class_names=names)
    _write(names, ["person", "car", "car"])
    with pytest.raises(SourceError, match="names 'car' more than once"):
        ImageFiles.from_list(listing, class_names=names)


def test_unusable_lists_are_refused_with_what_is_accepted(tmp_path):
    with pytest.raises(SourceError, match="does not exist; expected a text file of lines 'PATH FLAG_1"):
        ImageFiles.from_list(tmp_path / "missing.txt")
    with pytest.raises(SourceError, match="has no lines"):
        ImageFiles.from_list(_write(tmp_path / "empty.txt", [""]))
    with pytest.raises(SourceError, match=r"no usable line \(2 lines: line 1: no labels"):
        ImageFiles.from_list(_write(tmp_path / "paths.txt", ["a.jpg", "b.jpg"]))
    with pytest.raises(SourceError, match="--root .* is not a folder"):
        ImageFiles.from_list(_write(tmp_path / "ok.txt", ["a.jpg 1 0"]), root=tmp_path / "nowhere")


def test_the_writer_opens_a_list_spec_as_image_files(tmp_path):
    listing = _write(tmp_path / "DB.txt", ["a.jpg 0 1", "b.jpg 1 1"])
    source = open_source(ListSpec(listing))
    assert source.kind == "list" and source.labels.tolist() == [[0, 1], [1, 1]]


# ------------------------------------------------------------------------------------------
# Real images: composites of Imagenette images, written and read back
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def composite_list(imagenette_dir, tmp_path_factory) -> dict:
    """40 composites of train images in a list file with bad lines among them (1-based line
    numbers -> the word the reason must hold), and a truncated image."""
    root = tmp_path_factory.mktemp("composites")
    rows = make_composites(imagenette_dir, root, split="train", count=40, seed=0)
    truncated = root / "images" / "truncated.jpg"
    data = (root / rows[0][0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    lines = [list_line(path, flags) for path, flags in rows]
    flags_10 = " ".join(["0"] * 9 + ["1"])
    bad = {}
    for at, line, word in ((4, "images/train_0001.jpg 0 1 0", "3 label flags"),
                           (9, f"images/nothere.jpg {flags_10}", "unreadable"),
                           (13, "images/train_0002.jpg 0 1 0 0 2 0 0 0 0 1", "is not 0 or 1"),
                           (20, "images/train_0003.jpg", "no labels"),
                           (31, f"images/truncated.jpg {flags_10}", "truncated")):
        lines.insert(at - 1, line)
        bad[at] = word
    listing = _write(root / "train_DB.txt", lines)
    good_lines = [n for n in range(1, len(lines) + 1) if n not in bad]
    return {"root": root, "list": listing, "rows": rows, "bad": bad, "good_lines": good_lines}


@pytest.fixture(scope="module")
def composite_beton(composite_list, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("composite_beton") / "db.beton"
    return out, write_beton(ListSpec(composite_list["list"]), out, workers=2)


def test_the_manifest_records_multi_hot_labels_and_every_skipped_line(composite_list, composite_beton):
    out, manifest = composite_beton
    flags = np.stack([f for _, f in composite_list["rows"]])
    assert manifest == read_manifest(out)
    assert manifest["label_kind"] == "multi" and manifest["num_labels"] == 10 and manifest["source_kind"] == "list"
    assert manifest["num_images"] == 40 and manifest["classes"] == [str(i) for i in range(10)]
    assert manifest["counts"] == {str(c): int(n) for c, n in enumerate(flags.sum(axis=0))}
    assert manifest["num_without_labels"] == 0 and manifest["list_root"] == str(composite_list["root"])
    assert manifest["source"] == str(composite_list["list"])
    skipped = manifest["skipped"]
    assert [s["line"] for s in skipped] == sorted(composite_list["bad"])
    for entry in skipped:
        assert composite_list["bad"][entry["line"]] in entry["reason"], entry


def test_both_loaders_read_the_lists_flags_in_order(composite_list, composite_beton):
    from eigenmap.config import Config
    from eigenmap.data import build_eval_loader, build_train_loader

    out, _ = composite_beton
    flags = np.stack([f for _, f in composite_list["rows"]])
    cfg = Config()
    cfg.data.resolution, cfg.data.eval_resize, cfg.data.batch_size_per_worker, cfg.data.loader_workers = 32, 36, 8, 1
    evaluation = build_eval_loader(cfg.data, out, batch_size=16)
    assert evaluation.label_shape == (10,)
    batches = list(evaluation)
    assert all(y.dtype == torch.uint8 and y.shape[1:] == (10,) for _, y in batches)
    assert np.array_equal(np.concatenate([y.numpy() for _, y in batches]), flags)
    training = build_train_loader(cfg.data, out, rank=0, world_size=1, seed=3)
    assert training.label_shape == (10,)
    seen = np.concatenate([y.numpy() for _, _, y in training])
    assert np.array_equal(seen, flags[training.indices()])


def test_images_are_stored_whole_side_by_side(composite_list, composite_beton):
    from ffcv.reader import Reader

    out, _ = composite_beton
    widths = Reader(str(out)).metadata["f0"]["width"].tolist()
    assert widths == [SIDE_PX * int(f.sum()) for _, f in composite_list["rows"]]


def test_a_single_label_list_writes_class_indices(composite_list, tmp_path):
    lines = [f"{path} {int(np.flatnonzero(flags)[0])}" for path, flags in composite_list["rows"][:12]]
    out = tmp_path / "single.beton"
    manifest = write_beton(ListSpec(_write(composite_list["root"] / "single.txt", lines), num_labels=10),
                           out, workers=1)
    assert manifest["label_kind"] == "single" and manifest["num_labels"] == 10
    assert "num_without_labels" not in manifest and manifest["skipped"] == []
    from eigenmap.config import Config
    from eigenmap.data import build_eval_loader

    cfg = Config()
    cfg.data.resolution, cfg.data.eval_resize, cfg.data.loader_workers = 32, 36, 1
    loader = build_eval_loader(cfg.data, out, batch_size=5)
    assert loader.label_shape == ()
    labels = np.concatenate([y.numpy() for _, y in loader])
    assert labels.dtype == np.int64 and labels.tolist() == [int(line.split()[1]) for line in lines]


def test_folder_manifests_say_single_label(subset_beton):
    manifest = read_manifest(subset_beton)
    assert manifest["label_kind"] == "single" and manifest["num_labels"] == len(manifest["classes"])


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


def _prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", "prepare", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_prepare_list_writes_the_list_relative_to_root(composite_list, tmp_path):
    # the list moved away from its images: --root says where its paths start
    moved = tmp_path / "lists" / "train_DB.txt"
    moved.parent.mkdir()
    moved.write_text(composite_list["list"].read_text())
    out = tmp_path / "db.beton"
    done = _prepare("--list", str(moved), str(out), "--root", str(composite_list["root"]), "--workers", "2",
                    "--json", str(tmp_path / "figures.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote 40 images of 10 classes (multi-label)" in done.stdout
    assert "skipped 5 lines" in done.stdout and "line 4: " in done.stdout
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["label_kind"] == "multi" and figures["num_images"] == 40
    assert [s["line"] for s in read_manifest(out)["skipped"]] == sorted(composite_list["bad"])


def test_prepare_refuses_list_options_it_cannot_use(composite_list, tmp_path):
    cases = (
        (["--list", str(composite_list["list"])], "--list LIST takes one more argument, OUT"),
        (["--list", str(composite_list["list"]), "a.beton", "b.beton"], "--list LIST takes one more argument"),
        ([str(composite_list["root"]), str(tmp_path / "x.beton"), "--root", "/tmp"], "--root is only for --list LIST"),
        (["--list", str(tmp_path / "nope.txt"), str(tmp_path / "x.beton")], "does not exist"),
    )
    for args, message in cases:
        done = _prepare(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert message in done.stderr, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.beton").exists()
