"""The evaluation commands on what a user brings: anyone's arrays, copies, typos, reruns.

Every command runs as a user types it (a subprocess of the CLI). The run is an untrained model
written the way a finished run is (config, weights, status): these checks all happen before an
encoder reads an image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import REPO, cli_env

pytestmark = [pytest.mark.slow]

RUN_CONFIG = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 32, projector_out_dim: 32, num_classes: 10}
data: {resolution: 32, eval_resize: 36, batch_size_per_worker: 16, loader_workers: 1}
eval: {probe_epochs: 2, probe_batch_size: 32}
"""


def eigenmap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def untrained_run(tmp_path, small_beton) -> Path:
    """A run directory as a finished run leaves it (config, model.pt, status), weights untrained."""
    import torch

    from eigenmap.config import load_config, resolve, save_config
    from eigenmap.models import build_model
    from eigenmap.run import export_weights

    (tmp_path / "run.yaml").write_text(RUN_CONFIG)
    run_dir = tmp_path / "run"
    cfg = resolve(load_config(tmp_path / "run.yaml", [f"data.train_path={small_beton}", f"train.run_dir={run_dir}"]))
    torch.manual_seed(0)
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    export_weights(build_model(cfg).eval(), run_dir)
    (run_dir / "status.json").write_text(json.dumps({"status": "finished", "step": 0}))
    return run_dir


def clustered(folder: Path, n: int, *, seed: int, multi: bool = False, d: int = 16, classes: int = 4) -> Path:
    """Codes around one centroid per class (every pairwise cosine distinct: no ties) and labels."""
    rng = np.random.default_rng(seed)
    centroids = np.random.default_rng(99).normal(size=(classes, d))
    if multi:
        labels = (rng.random((n, classes)) < 0.35).astype(np.uint8)
        labels[np.arange(n), rng.integers(0, classes, n)] = 1  # every image has a label
        codes = labels @ centroids + 0.8 * rng.normal(size=(n, d))
    else:
        labels = rng.integers(0, classes, n)
        codes = centroids[labels] + 0.8 * rng.normal(size=(n, d))
    folder.mkdir(parents=True)
    np.save(folder / "codes.npy", codes.astype(np.float32))
    np.save(folder / "features.npy", np.concatenate([codes, codes ** 2], axis=1).astype(np.float32))
    np.save(folder / "labels.npy", labels)
    return folder


def brute_force(db: np.ndarray, db_labels: np.ndarray, q: np.ndarray, q_labels: np.ndarray, R: int):
    """mAP@R (HashNet: mean of precision@k over the relevant ranks k <= R) and P@R, by hand."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    scores = unit(q.astype(np.float64)) @ unit(db.astype(np.float64)).T
    aps, precisions = [], []
    for i in range(len(q)):
        order = np.argsort(-scores[i], kind="stable")[:R]
        if q_labels.ndim == 1:
            relevant = db_labels[order] == q_labels[i]
        else:
            relevant = (db_labels[order] & q_labels[i]).any(axis=1)
        hits = np.cumsum(relevant)
        ranks = np.flatnonzero(relevant)
        aps.append(float(np.mean(hits[ranks] / (ranks + 1))) if len(ranks) else 0.0)
        precisions.append(relevant.sum() / R)
    return float(np.mean(aps)), float(np.mean(precisions))


@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_retrieval_on_a_users_arrays_gives_the_brute_force_map_and_precision(tmp_path, multi):
    db, q = clustered(tmp_path / "db", 300, seed=1, multi=multi), clustered(tmp_path / "q", 40, seed=2, multi=multi)
    done = eigenmap("retrieve", "--database", str(db), "--queries", str(q), "--dims", "16", "--R", "25",
                    "--repeats", "1", "--no-baselines", "--no-funnel", "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "retrieval.json").read_text())
    expected_map, expected_p = brute_force(np.load(db / "codes.npy"), np.load(db / "labels.npy"),
                                           np.load(q / "codes.npy"), np.load(q / "labels.npy"), R=25)
    (only,) = report["lengths"]
    assert only["codes"]["map"] == pytest.approx(expected_map, abs=1e-9)
    assert only["codes"]["precision"] == pytest.approx(expected_p, abs=1e-9)
    assert report["labels"]["kind"] == ("multi" if multi else "single")
    inputs = report["inputs"]
    assert inputs["run"] is None and inputs["database"]["kind"] == "arrays"
    assert inputs["database"]["id"].startswith("arrays:") and inputs["queries"]["path"] == str(q.resolve())
    assert "written by another tool" in inputs["database"]["source"]


def test_the_probe_runs_on_a_users_arrays_without_a_run_and_refuses_multi_label_sets(tmp_path):
    train, val = clustered(tmp_path / "train", 200, seed=3), clustered(tmp_path / "val", 60, seed=4)
    done = eigenmap("probe", "--train", str(train), "--val", str(val), "--epochs", "20", "--knn-k", "5", "20",
                    "--out", str(tmp_path / "probe"))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert figures["run"] is None and figures["num_classes"] == 4
    assert figures["linear_probe"]["top1"] > 80 and figures["knn"]["top1"]["codes"]["5"] > 80  # clusters 4 apart
    assert "chance level (1 / 4 classes): 25.00" in done.stdout
    multi = clustered(tmp_path / "multi", 50, seed=5, multi=True)
    done = eigenmap("probe", "--train", str(multi), "--val", str(clustered(tmp_path / "mv", 20, seed=6, multi=True)),
                    "--out", str(tmp_path / "probe2"))
    assert done.returncode == 2 and "is a multi-label set" in done.stderr and "Traceback" not in done.stderr


def test_a_byte_copy_of_the_queries_file_is_refused_as_the_database_naming_both_paths(untrained_run,
                                                                                      small_val_beton, tmp_path):
    copy = tmp_path / "valcopy.beton"
    shutil.copyfile(small_val_beton, copy)
    shutil.copyfile(str(small_val_beton) + ".json", str(copy) + ".json")
    for command in (["retrieve", str(untrained_run), "--database", str(copy), "--queries", str(small_val_beton)],
                    ["probe", str(untrained_run), "--train", str(copy), "--val", str(small_val_beton)]):
        done = eigenmap(*command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "are the same images" in done.stderr and str(copy) in done.stderr, done.stderr
        assert str(small_val_beton) in done.stderr and "Traceback" not in done.stderr
    assert not (untrained_run / "eval").exists(), "nothing is extracted for a refused pair"


def test_a_missing_second_set_is_refused_before_any_array_is_extracted(untrained_run, small_beton, small_val_beton,
                                                                       tmp_path):
    typo = tmp_path / "vall.beton"
    for command in (["retrieve", str(untrained_run), "--database", str(small_beton), "--queries", str(typo)],
                    ["probe", str(untrained_run), "--train", str(small_beton), "--val", str(typo)]):
        done = eigenmap(*command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert f"'{typo}' does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (untrained_run / "eval").exists(), "the first set was extracted before the second was checked"
    done = eigenmap("retrieve", str(untrained_run), "--database", str(small_beton), "--queries", str(small_val_beton),
                    "--dims", "64")
    assert done.returncode == 2 and "code length 64 is outside [1, 32]" in done.stderr
    assert not (untrained_run / "eval").exists()


def test_a_rerun_on_other_inputs_keeps_the_earlier_report_unless_told_to_overwrite(tmp_path):
    db = clustered(tmp_path / "db", 120, seed=7)
    q1, q2 = clustered(tmp_path / "q1", 20, seed=8), clustered(tmp_path / "q2", 20, seed=9)
    common = ["--dims", "16", "--R", "10", "--repeats", "1", "--no-baselines", "--no-funnel", "--out",
              str(tmp_path / "report")]
    assert eigenmap("retrieve", "--database", str(db), "--queries", str(q1), *common).returncode == 0
    first = (tmp_path / "report" / "retrieval.json").read_text()
    assert eigenmap("retrieve", "--database", str(db), "--queries", str(q1), *common).returncode == 0  # the same
    done = eigenmap("retrieve", "--database", str(db), "--queries", str(q2), *common)
    assert done.returncode == 2 and "holds a report of other inputs" in done.stderr and str(q1) in done.stderr
    assert json.loads((tmp_path / "report" / "retrieval.json").read_text())["inputs"] == json.loads(first)["inputs"]
    done = eigenmap("retrieve", "--database", str(db), "--queries", str(q2), *common, "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "retrieval.json").read_text())
    assert report["inputs"]["queries"]["path"] == str(q2.resolve())
    assert not list(tmp_path.glob(".report.*")), "no temporary report folder is left"
