"""Multi-label sets end to end on real images: list files of composites -> prepare -> train ->
extract -> retrieve, every command as a user types it.

The composites paste one to three Imagenette images of different classes side by side and carry
the flags of those classes (tests/multilabel_data.py); the database is made of training images,
the queries of validation images, so no image is in both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import REPO, cli_env
from multilabel_data import list_line, make_composites

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

MULTI_LABEL_RUN = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 64, projector_out_dim: 64,
        online_classifier: false}
loss: {alpha: 0.01}
optim: {name: lars, base_lr: 0.3, warmup_epochs: 1}
data: {resolution: 32, eval_resize: 36, batch_size_per_worker: 8, loader_workers: 1}
dist: {num_workers: 1, cpus_per_worker: 1, zero_stage: 0, max_failures: 0}
train: {epochs: 1, log_every_steps: 3, checkpoint_every_steps: 100, keep_checkpoints: 1, progress_bar: false}
"""


def eigenmap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eigenmap.train.worker", *args], cwd=REPO,
                          env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lists(imagenette_dir, tmp_path_factory) -> dict:
    """A database list (48 train composites, two bad lines among them) and a query list (16 val
    composites), both written with ``eigenmap prepare --list``."""
    tmp = tmp_path_factory.mktemp("multilabel")
    db_rows = make_composites(imagenette_dir, tmp, split="train", count=48, seed=0)
    q_rows = make_composites(imagenette_dir, tmp, split="val", count=16, seed=1)
    db_lines = [list_line(p, f) for p, f in db_rows]
    db_lines.insert(6, "images/missing.jpg " + " ".join(["1"] + ["0"] * 9))  # line 7
    db_lines.insert(19, "images/train_0005.jpg 1 0 1")  # line 20
    (tmp / "train_DB.txt").write_text("\n".join(db_lines) + "\n")
    (tmp / "val_Query.txt").write_text("\n".join(list_line(p, f) for p, f in q_rows) + "\n")
    for name, out in (("train_DB.txt", "db.beton"), ("val_Query.txt", "query.beton")):
        done = eigenmap("prepare", "--list", str(tmp / name), str(tmp / out), "--workers", "2")
        assert done.returncode == 0, done.stderr[-3000:]
    return {"dir": tmp, "db": tmp / "db.beton", "query": tmp / "query.beton",
            "db_flags": np.stack([f for _, f in db_rows]), "query_flags": np.stack([f for _, f in q_rows])}


@pytest.fixture(scope="module")
def multi_label_run(lists) -> Path:
    """6 steps of a ResNet-18 trained on the multi-label database (no online classifier)."""
    (lists["dir"] / "run.yaml").write_text(MULTI_LABEL_RUN)
    run_dir = lists["dir"] / "run"
    done = worker(str(lists["dir"] / "run.yaml"), f"data.train_path={lists['db']}", f"train.run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_training_with_the_online_classifier_on_a_multi_label_set_is_refused(lists):
    done = worker(str(REPO / "configs" / "demo.yaml"), f"data.train_path={lists['db']}",
                  f"train.run_dir={lists['dir'] / 'refused'}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "config key 'model.online_classifier'" in done.stderr and "model.online_classifier=false" in done.stderr
    assert not (lists["dir"] / "refused").exists()


def test_a_list_round_trips_exactly_through_prepare_and_extract(lists, multi_label_run, tmp_path):
    manifest = json.loads(Path(str(lists["db"]) + ".json").read_text())
    assert manifest["label_kind"] == "multi" and manifest["num_labels"] == 10 and manifest["num_images"] == 48
    assert [(s["line"], s["path"].rsplit("/", 1)[1]) for s in manifest["skipped"]] == [
        (7, "missing.jpg"), (20, "train_0005.jpg")]
    assert "unreadable" in manifest["skipped"][0]["reason"]
    assert manifest["skipped"][1]["reason"].startswith("3 label flags, expected 10")
    done = eigenmap("extract", str(multi_label_run), str(lists["db"]), "--out", str(tmp_path / "db"))
    assert done.returncode == 0, done.stderr[-3000:]
    labels = np.load(tmp_path / "db" / "labels.npy")
    assert labels.dtype == np.uint8 and np.array_equal(labels, lists["db_flags"])  # every written row, in order
    meta = json.loads((tmp_path / "db" / "features.json").read_text())
    assert meta["shapes"]["labels"] == [48, 10] and meta["shapes"]["codes"] == [48, 64]
    assert meta["dataset"]["label_kind"] == "multi" and meta["dataset"]["num_labels"] == 10


def test_retrieve_scores_two_multi_label_sets_by_shared_labels(lists, multi_label_run, tmp_path):
    done = eigenmap("retrieve", str(multi_label_run), "--database", str(lists["db"]), "--queries",
                    str(lists["query"]), "--R", "10", "--repeats", "1", "--no-funnel", "--no-baselines",
                    "--timing-queries", "5", "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "retrieval.json").read_text())
    assert report["labels"]["kind"] == "multi"
    assert report["sizes"]["database"] == 48 and report["sizes"]["queries"] == 16
    assert report["timing"]["queries"] == 5  # timed on a sample; scored on all 16 (below)
    # precision@10 at the full length, by brute force on the cached codes: cosine similarity,
    # relevant = shares at least one label with the query
    codes = {}
    for role, beton in (("db", lists["db"]), ("query", lists["query"])):
        folder = multi_label_run / "eval" / "features" / beton.stem
        codes[role] = np.load(folder / "codes.npy").astype(np.float64)
        assert np.array_equal(np.load(folder / "labels.npy"), lists[f"{role}_flags"])
    db, q = (codes[r] / np.linalg.norm(codes[r], axis=1, keepdims=True) for r in ("db", "query"))
    top = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :10]
    relevant = (lists["query_flags"][:, None, :] & lists["db_flags"][top]).any(axis=2)
    full = next(rec for rec in report["lengths"] if rec["dim"] == 64)
    assert full["codes"]["precision"] == pytest.approx(relevant.mean(), abs=1e-9)
