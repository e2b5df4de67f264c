"""The writer: every good image in the file, every bad one listed, labels from the folders."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eigenmap.data import SourceError, WriterError, read_manifest, write_beton
from eigenmap.data.decode import load_rgb

REPO_ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def mixed_source(imagenette_subset: Path, odd_files: dict, tmp_path_factory) -> Path:
    """Real Imagenette classes plus the 'odd' class of broken and unusual files."""
    root = tmp_path_factory.mktemp("mixed")
    for cls in imagenette_subset.iterdir():
        shutil.copytree(cls, root / cls.name)
    shutil.copytree(odd_files["root"] / "odd", root / "odd", symlinks=True)
    shutil.copy(odd_files["root"] / "README.txt", root / "README.txt")
    return root


@pytest.fixture(scope="module")
def mixed_written(mixed_source: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mixed_out") / "mixed.beton"
    manifest = write_beton(mixed_source, out, workers=2)
    return out, manifest


def test_every_good_image_is_stored_with_its_folder_label_and_pixels(mixed_source, mixed_written, odd_files,
                                                                     read_stored):
    out, manifest = mixed_written
    classes = sorted(p.name for p in mixed_source.iterdir() if p.is_dir())
    assert manifest["classes"] == classes
    bad = set(odd_files["bad"])
    expected = [(label, f) for label, cls in enumerate(classes)
                for f in sorted((mixed_source / cls).iterdir()) if f.name not in bad]
    stored = read_stored(out)
    assert manifest["num_images"] == len(stored) == len(expected)
    assert [label for _, label in stored] == [label for label, _ in expected]
    assert manifest["counts"] == {c: sum(1 for label, _ in expected if classes[label] == c) for c in classes}
    for (image, _), (_, path) in zip(stored, expected):
        source = load_rgb(path)
        assert image.shape == source.shape, path
        # a JPEG re-encoding at quality 90 of the same pixels
        assert _psnr(image, source) > 30, path


def test_every_bad_file_is_listed_with_its_reason(mixed_source, mixed_written, odd_files):
    _, manifest = mixed_written
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(odd_files["bad"]) | {"README.txt"}
    for name, word in odd_files["bad"].items():
        assert word in reasons[name], (name, reasons[name])
    assert "not in a class folder" in reasons["README.txt"]
    # the manifest on disk is the one returned
    assert read_manifest(mixed_written[0]) == json.loads(json.dumps(manifest))


def test_odd_image_modes_are_converted_to_rgb(mixed_source, mixed_written, odd_files, read_stored):
    out, manifest = mixed_written
    odd_label = manifest["classes"].index("odd")
    bad = set(odd_files["bad"])
    names = [f.name for f in sorted((mixed_source / "odd").iterdir()) if f.name not in bad]
    stored = [image for image, label in read_stored(out) if label == odd_label]
    assert len(stored) == len(names) == len(odd_files["good"])
    for name, image in zip(names, stored):
        assert image.ndim == 3 and image.shape[2] == 3
        want = np.array(odd_files["good"][name])
        assert np.abs(image[0, 0].astype(int) - want).max() <= 8, (name, image[0, 0], want)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST})")
def test_fashion_mnist_idx_files_convert(tmp_path, read_stored):
    import gzip

    out = tmp_path / "fm.beton"
    manifest = write_beton(FASHION_MNIST, out, split="t10k", write_mode="raw", workers=2)
    with gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    with gzip.open(FASHION_MNIST / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    assert manifest["num_images"] == 10000 and manifest["skipped"] == []
    assert manifest["classes"] == [str(i) for i in range(10)]
    assert manifest["label_names"][0] == "T-shirt/top"
    assert list(manifest["counts"].values()) == np.bincount(labels, minlength=10).tolist()
    stored = read_stored(out)
    assert [label for _, label in stored] == labels.tolist()
    for i in (0, 1234, 9999):
        assert np.array_equal(stored[i][0], np.repeat(pixels[i][..., None], 3, axis=2))
    # the scratch copy of the decompressed images is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm.beton", "fm.beton.json"]


def test_existing_output_is_kept_unless_overwrite(imagenette_subset, tmp_path):
    out = tmp_path / "a.beton"
    out.write_bytes(b"precious")
    with pytest.raises(WriterError, match="--overwrite"):
        write_beton(imagenette_subset, out, workers=1)
    assert out.read_bytes() == b"precious"
    manifest = write_beton(imagenette_subset, out, workers=1, overwrite=True)
    assert out.stat().st_size > 1000 and read_manifest(out) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.beton", "a.beton.json"]  # no leftovers


@pytest.mark.parametrize("kind", ["missing", "empty", "no class folders", "only bad files"])
def test_unusable_source_is_an_error_naming_it(kind, odd_files, tmp_path):
    src = tmp_path / "src"
    if kind == "empty":
        src.mkdir()
    elif kind == "no class folders":
        src.mkdir()
        (src / "a.jpg").write_bytes(b"x")
    elif kind == "only bad files":
        (src / "cls").mkdir(parents=True)
        (src / "cls" / "empty.jpg").write_bytes(b"")
        (src / "cls" / "text.jpg").write_text("not an image")
    out = tmp_path / "out.beton"
    with pytest.raises((SourceError, WriterError), match=str(src)):
        write_beton(src, out, workers=1)
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_a_tree_of_split_folders_is_refused_naming_a_split_to_pass(imagenette_subset, tmp_path):
    # train/ and test/ holding class folders would become two classes named after the splits
    for split in ("test", "train"):
        shutil.copytree(imagenette_subset, tmp_path / "tree" / split)
    out = tmp_path / "out.beton"
    with pytest.raises(SourceError, match=r"holds split folders \(test/, train/\).*e\.g\. '.*/tree/train'"):
        write_beton(tmp_path / "tree", out, workers=1)
    assert not out.exists()


def test_class_folders_named_like_splits_are_classes_when_their_images_sit_in_them(imagenette_subset, tmp_path):
    first = sorted(imagenette_subset.iterdir())[0]
    for name in ("train", "val"):
        shutil.copytree(first, tmp_path / "src" / name)
    manifest = write_beton(tmp_path / "src", tmp_path / "out.beton", workers=1)
    assert manifest["classes"] == ["train", "val"]


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    from launch.cli import main

    rc = main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "o.beton")])
    err = capsys.readouterr().err
    assert rc != 0 and "nowhere" in err and "does not exist" in err and "Traceback" not in err
    (tmp_path / "src").mkdir()
    rc = main(["prepare", str(tmp_path / "src"), str(tmp_path / "o.beton"), "--jpeg-quality", "101"])
    err = capsys.readouterr().err
    assert rc != 0 and "101" in err and "1 to 100" in err


def test_cli_writes_the_file_and_its_figures(imagenette_subset, tmp_path, capsys):
    from launch.cli import main

    out, figures = tmp_path / "s.beton", tmp_path / "figures.json"
    rc = main(["prepare", str(imagenette_subset), str(out), "--workers", "2", "--max-resolution", "64",
               "--json", str(figures)])
    assert rc == 0
    data = json.loads(figures.read_text())
    assert data["num_images"] == read_manifest(out)["num_images"] > 0
    assert data["seconds"] > 0 and data["num_skipped"] == 0
    assert read_manifest(out)["max_resolution"] == 64
    assert "wrote" in capsys.readouterr().out


def _deliver_sigint() -> None:
    """In the child before exec: SIGINT handled by default and not blocked.

    A child inherits its parent's ignored signals and signal mask, and a test process (a
    runner started in the background, libraries' threads) may have SIGINT ignored or blocked.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST})")
def test_interrupted_write_leaves_no_output(tmp_path):
    out = tmp_path / "fm.beton"
    cmd = [sys.executable, "-m", "launch.cli", "prepare", str(FASHION_MNIST), str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_deliver_sigint)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".fm.beton.partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # one Ctrl-C, just as the write of 60,000 images begins (often while the workers are being
    # forked: the writer must not lose it there)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the write went on to the end despite Ctrl-C"
    assert not out.exists() and not Path(str(out) + ".json").exists()
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]
    assert b"interrupted" in err


def test_ctrl_c_during_a_work_queue_put_waits_for_the_put_so_its_lock_is_not_left_held(imagenette_subset, tmp_path,
                                                                                      monkeypatch):
    # a KeyboardInterrupt raised inside Queue.put just after it takes the queue's lock left that
    # lock held, and the interrupted `eigenmap prepare` hung at exit (seen in the suite once)
    import multiprocessing
    import os
    from multiprocessing.queues import Queue as QueueClass

    import eigenmap.data.ffcv_writer as ffcv_writer

    parent, completed = os.getpid(), []

    class CtrlCInPut(QueueClass):
        def put(self, obj, *args, **kwargs):
            if os.getpid() == parent and not completed:
                os.kill(parent, signal.SIGINT)  # Ctrl-C lands while this put runs
                super().put(obj, *args, **kwargs)
                completed.append(obj)
            else:
                super().put(obj, *args, **kwargs)

    monkeypatch.setattr(ffcv_writer, "Queue", lambda: CtrlCInPut(ctx=multiprocessing.get_context()))
    with pytest.raises(KeyboardInterrupt):
        write_beton(imagenette_subset, tmp_path / "out.beton", workers=1)
    assert completed, "the interrupt cut the put short"
    assert list(tmp_path.iterdir()) == []


def test_a_writer_process_that_dies_fails_the_write_instead_of_hanging(tmp_path):
    import os

    from ffcv.fields import IntField, RGBImageField

    from eigenmap.data.ffcv_writer import make_writer

    class Dying:
        def __len__(self):
            return 50

        def __getitem__(self, i):
            if i == 20:
                os._exit(3)  # as if killed (out of memory)
            return np.zeros((8, 8, 3), dtype=np.uint8), 0

    writer = make_writer(str(tmp_path / "x.beton"), {"image": RGBImageField(), "label": IntField()}, 1 << 21, 2)
    with pytest.raises(WriterError, match="exited with code 3"):
        writer.from_indexed_dataset(Dying(), indices=np.arange(50))


def test_a_rewrite_that_fails_before_publishing_leaves_the_old_pair_valid(imagenette_subset, tmp_path, monkeypatch):
    """The old OUT is never deleted first: until the new file and manifest are both complete,
    the old pair stays in place and consistent (here the new manifest cannot be written)."""
    from eigenmap.data import writer
    from eigenmap.data.beton_check import beton_problems

    out = tmp_path / "a.beton"
    old = write_beton(imagenette_subset, out, workers=1)
    old_bytes = out.read_bytes()

    def disk_full(manifest, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_manifest", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_beton(imagenette_subset, out, workers=1, overwrite=True, max_resolution=32)
    assert out.read_bytes() == old_bytes and read_manifest(out) == old
    assert beton_problems(out, checksum=True) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.beton", "a.beton.json"]  # no leftovers


def test_the_new_pair_is_published_together_under_the_folders_lock(imagenette_subset, tmp_path):
    """A second prepare (or a training start's check) holding the folder's lock keeps this one
    from publishing half a pair; once released, file and manifest arrive together."""
    import threading

    from eigenmap.data.beton_check import beton_problems
    from eigenmap.durable import folder_lock

    out = tmp_path / "b.beton"
    done: list = []
    with folder_lock(tmp_path):
        thread = threading.Thread(target=lambda: done.append(write_beton(imagenette_subset, out, workers=1)))
        thread.start()
        deadline = time.monotonic() + 120
        while not any(".b.beton.json.partial" in p.name for p in tmp_path.iterdir()):  # ready to publish
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert not out.exists() and not Path(str(out) + ".json").exists()  # waits for the lock
    thread.join(timeout=120)
    assert done and beton_problems(out, checksum=True) == [] and read_manifest(out) == done[0]


def test_each_file_is_read_and_decoded_once(mixed_source, tmp_path, monkeypatch):
    """One pass: the writer processes decode each file once (checking it on the way), where a
    check pass before the write decoded every file twice."""
    import os

    from PIL import ImageFile

    decodes = tmp_path / "decodes.txt"
    load = ImageFile.ImageFile.load

    def counting_load(self):
        if self.tile:  # not yet decoded: this call decodes (later calls return the pixels)
            with open(decodes, "a") as f:  # appends from the forked writer processes too
                f.write(f"{os.path.basename(self.filename)}\n")
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    manifest = write_beton(mixed_source, tmp_path / "once.beton", workers=2)
    names = decodes.read_text().split()
    files = [p for cls in sorted(mixed_source.iterdir()) if cls.is_dir() for p in sorted(cls.iterdir())]
    decodable = {p.name for p in files if p.name not in {"empty.JPEG", "notes.JPEG", "dangling.jpg"}}
    assert set(names) == decodable  # every file that has pixels to decode was decoded...
    assert len(names) == len(decodable), sorted(n for n in set(names) if names.count(n) > 1)[:5]  # ...once
    assert manifest["num_images"] == len(decodable) - 2  # the truncated and the corrupt JPEG are listed


def test_bad_files_leave_no_hole_the_file_numbers_the_good_images_in_order(mixed_written):
    from ffcv.reader import Reader

    from eigenmap.data.beton_check import beton_problems

    out, manifest = mixed_written
    reader = Reader(str(out))
    assert reader.num_samples == manifest["num_images"]
    ids = reader.alloc_table["sample_id"]
    assert ids.tolist() == list(range(manifest["num_images"]))  # one allocation per image, in order
    assert list(np.bincount(reader.metadata["f1"], minlength=len(manifest["classes"]))) == list(
        manifest["counts"].values())
    assert (reader.metadata["f0"]["width"] > 0).all()  # no empty metadata row was left in the file
    assert beton_problems(out, checksum=True) == []


def test_an_image_larger_than_the_first_page_is_written_with_larger_pages(tmp_path, read_stored, caplog):
    from PIL import Image

    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    big = np.random.default_rng(0).integers(0, 256, size=(1000, 1100, 3), dtype=np.uint8)  # 3.3 MB raw
    Image.fromarray(big).save(src / "big.png")
    Image.fromarray(big[:40, :50]).save(src / "small.png")
    with caplog.at_level("WARNING", logger="eigenmap.data.writer"):
        manifest = write_beton(tmp_path / "src", tmp_path / "big.beton", write_mode="raw", workers=1)
    assert manifest["num_images"] == 2 and manifest["skipped"] == []
    stored = read_stored(tmp_path / "big.beton")
    assert np.array_equal(stored[0][0], big) and np.array_equal(stored[1][0], big[:40, :50])
    assert "do not fit 2 MiB FFCV pages" in caplog.text and "big.png" in caplog.text
