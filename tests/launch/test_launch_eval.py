"""Evaluation end to end on real Imagenette images: train briefly, extract, probe, retrieve.

Every command runs as a user types it (a subprocess of the CLI); the outputs are read back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import REPO, TINY_RUN, cli_env, eigenmap

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def trained_run(small_beton, tmp_path_factory) -> Path:
    """10 steps of a ResNet-18 on 160 real images, as one plain worker process."""
    tmp = tmp_path_factory.mktemp("eval-run")
    (tmp / "run.yaml").write_text(TINY_RUN)
    run_dir = tmp / "run"
    done = subprocess.run([sys.executable, "-m", "eigenmap.train.worker", str(tmp / "run.yaml"),
                           f"data.train_path={small_beton}", f"train.run_dir={run_dir}"], cwd=REPO,
                          env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_extract_probe_and_retrieve_write_every_figure(trained_run, small_beton, small_val_beton, tmp_path):
    extracted = eigenmap("extract", str(trained_run), str(small_beton), "--json", str(tmp_path / "x.json"))
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    folder = trained_run / "eval" / "features" / "train"
    meta = json.loads((folder / "features.json").read_text())
    assert meta["shapes"] == {"features": [160, 512], "codes": [160, 64], "labels": [160], "thumbnails": [160, 256]}
    assert meta["step"] == 10 and meta["dataset"]["num_images"] == 160 and meta["device"] == "cpu"
    assert json.loads((tmp_path / "x.json").read_text())["folder"] == str(folder)
    assert np.isfinite(np.load(folder / "codes.npy")).all()
    # dataset order: the writer enumerates classes, then files
    assert np.load(folder / "labels.npy").tolist() == [c for c in range(10) for _ in range(16)]
    written = (folder / "codes.npy").stat().st_mtime_ns

    probed = eigenmap("probe", str(trained_run), "--train", str(small_beton), "--val", str(small_val_beton),
                      "--json", str(tmp_path / "probe.json"))
    assert probed.returncode == 0, probed.stderr[-3000:]
    assert (folder / "codes.npy").stat().st_mtime_ns == written, "the cached train arrays were extracted again"
    figures = json.loads((trained_run / "eval" / "probe" / "train--val" / "probe.json").read_text())
    assert figures == json.loads((tmp_path / "probe.json").read_text())
    probe = figures["linear_probe"]
    assert probe["epochs"] == 3 and len(probe["history"]) == 3 and probe["batch_size"] == 32
    for key in ("top1", "top5", "best_top1"):
        assert 0.0 <= probe[key] <= 100.0, key
    assert probe["top5"] >= probe["top1"] and probe["best_top1"] >= probe["top1"]
    assert set(figures["knn"]["top1"]) == {"features", "codes"}
    assert set(figures["knn"]["top1"]["codes"]) == {"20", "200"} and figures["knn"]["temperature"] == 0.07
    assert figures["val"]["num_images"] == 80 and figures["step"] == 10
    assert "top-1" in probed.stdout and "best epoch" in probed.stdout

    retrieved = eigenmap("retrieve", str(trained_run), "--database", str(small_beton), "--queries",
                         str(small_val_beton), "--R", "20", "--repeats", "1", "--min-timed-seconds", "0.05",
                         "--json", str(tmp_path / "r.json"))
    assert retrieved.returncode == 0, retrieved.stderr[-3000:]
    out = trained_run / "eval" / "retrieval" / "codes" / "train--val"
    assert {p.name for p in out.iterdir()} >= {"retrieval.json", "retrieval.md", "retrieval_map.png",
                                                "retrieval_qps.png"}
    report = json.loads((out / "retrieval.json").read_text())
    assert report["search"]["backend"] == "faiss-cpu" and report["search"]["device"] == "cpu"
    assert [rec["dim"] for rec in report["lengths"]] == [4, 8, 16, 32, 64]  # the default: from 4 up to k
    for rec in report["lengths"]:
        assert 0.0 <= rec["codes"]["map"] <= 1.0 and rec["qps"] > 0
        assert "map_mean" in rec["random_subset"] and "map" in rec["pca"]
    assert report["funnel"]["map"] >= 0 and report["inputs"]["step"] == 10
    assert "faiss-cpu" in retrieved.stdout


def test_retrieve_runs_on_saved_feature_folders_without_the_run(trained_run, small_beton, small_val_beton, tmp_path):
    for beton in (small_beton, small_val_beton):
        done = eigenmap("extract", str(trained_run), str(beton), "--out", str(tmp_path / beton.stem))
        assert done.returncode == 0, done.stderr[-3000:]
    done = eigenmap("retrieve", "--database", str(tmp_path / "train"), "--queries", str(tmp_path / "val"),
                    "--features", "--dims", "64", "512", "--R", "10", "--repeats", "1", "--no-funnel",
                    "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "retrieval.json").read_text())
    assert report["name"] == "features" and report["sizes"]["code_length"] == 512
    assert [rec["dim"] for rec in report["lengths"]] == [64, 512] and report["inputs"]["run"] is None


def test_retrieval_and_probe_refuse_sets_whose_labels_index_different_classes(trained_run, small_val_beton, tmp_path):
    done = eigenmap("extract", str(trained_run), str(small_val_beton), "--out", str(tmp_path / "val"))
    assert done.returncode == 0, done.stderr[-3000:]
    # the same arrays, as a dataset written from a folder that lacked the first class
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "val", other)
    meta = json.loads((other / "features.json").read_text())
    dropped = meta["dataset"]["classes"].pop(0)
    meta["dataset"].update(path=str(tmp_path / "other.beton"), sha256="0" * 64)  # another file's contents
    (other / "features.json").write_text(json.dumps(meta))
    for command in (["retrieve", "--database", str(tmp_path / "val"), "--queries", str(other), "--R", "10",
                     "--out", str(tmp_path / "report")],
                    ["probe", str(trained_run), "--train", str(tmp_path / "val"), "--val", str(other)]):
        done = eigenmap(*command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "label different class lists (10 vs 9 classes; in one only: " + dropped in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()


def test_retrieval_and_probe_refuse_one_set_in_both_roles(trained_run, small_val_beton, tmp_path):
    # scored against itself, each query finds itself first: mAP and kNN would be inflated, not measured
    done = eigenmap("extract", str(trained_run), str(small_val_beton), "--out", str(tmp_path / "val"))
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(tmp_path / "val", tmp_path / "copy")  # the same images in another folder
    for command, consequence in (
            (["retrieve", "--database", str(tmp_path / "val"), "--queries", str(tmp_path / "val"), "--R", "10",
              "--out", str(tmp_path / "report")], "every query would find itself first"),
            (["retrieve", "--database", str(tmp_path / "val"), "--queries", str(tmp_path / "copy"), "--R", "10",
              "--out", str(tmp_path / "report")], "every query would find itself first"),
            (["probe", str(trained_run), "--train", str(tmp_path / "val"), "--val", str(tmp_path / "copy")],
             "scored on the images they were fitted to")):
        done = eigenmap(*command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "are the same images" in done.stderr and consequence in done.stderr, done.stderr
        assert "accepted: " in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()


def test_a_run_without_trained_weights_is_refused_naming_the_missing_file(trained_run, small_beton, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    for command in (["probe", str(unfinished), "--train", str(small_beton), "--val", str(small_beton)],
                    ["retrieve", str(unfinished), "--database", str(small_beton), "--queries", str(small_beton)],
                    ["extract", str(unfinished), str(small_beton)]):
        done = eigenmap(*command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "has no trained weights (model.pt is missing" in done.stderr and "Traceback" not in done.stderr
    done = eigenmap("probe", str(tmp_path / "nowhere"), "--train", str(small_beton), "--val", str(small_beton))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_extraction_on_two_ray_workers_writes_the_same_arrays_as_one_process(trained_run, small_val_beton, tmp_path):
    """Each worker writes its contiguous shard's rows; labels come to rank 0 by an uneven gather
    (80 images: 40 each). Tolerance: the same fp32 CPU kernels per image, but batch boundaries
    differ between the runs, and a conv may pick another algorithm for another batch size."""
    one = eigenmap("extract", str(trained_run), str(small_val_beton), "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = eigenmap("extract", str(trained_run), str(small_val_beton), "--out", str(tmp_path / "two"),
                   "--workers", "2", "--batch-size", "16", timeout=400)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "features.json").read_text())["workers"] == 2
    for name in ("features.npy", "codes.npy"):
        a, b = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4), (name, np.abs(a - b).max())
    assert np.array_equal(np.load(tmp_path / "one" / "labels.npy"), np.load(tmp_path / "two" / "labels.npy"))
