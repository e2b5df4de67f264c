"""tools/bench_quality.py: a tiny run of two methods end to end, resumed; the results page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench_quality.py"


def _load_bench():
    return load_script("tools/bench_quality.py")


@pytest.fixture(scope="module")
def tiny_imagefolder(imagenette_dir, tmp_path_factory) -> Path:
    """train/ and val/ of 10 Imagenette classes: 16 and 4 images each (links)."""
    root = tmp_path_factory.mktemp("quality-data")
    for split, n in (("train", 16), ("val", 4)):
        for cls in sorted((imagenette_dir / split).iterdir()):
            (root / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                (root / split / cls.name / f.name).symlink_to(f)
    return root


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_quality_trains_evaluates_and_resumes(tiny_imagefolder, tmp_path):
    out, figures = tmp_path / "out", tmp_path / "quality.json"
    cmd = [sys.executable, str(BENCH), "--data", str(tiny_imagefolder), "--epochs", "1", "--out", str(out),
           "--methods", "neuralef_stopgrad", "random_init", "--json", str(figures),
           "--results-md", str(tmp_path / "results.md"),
           "--set", "data.batch_size_per_worker=32", "data.resolution=32", "data.eval_resize=36",
           "model.projector_hidden_dim=64", "eval.probe_epochs=2"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert set(data["methods"]) == {"neuralef_stopgrad", "random_init"}
    trained, untrained = data["methods"]["neuralef_stopgrad"], data["methods"]["random_init"]
    assert trained["step"] == 5 and untrained["step"] == 0  # 160 images / 32 per step
    assert set(trained["map_at_100"]) == {"8", "16", "32", "64", "128", "256", "512"}
    for name, m in data["methods"].items():  # the tool's figures are the run's own retrieval report, length by length
        reports = list((out / "runs-1ep" / name / "eval" / "retrieval" / "codes").glob("*/retrieval.json"))
        assert len(reports) == 1, reports
        report = json.loads(reports[0].read_text())
        assert m["map_at_100"] == {str(rec["dim"]): rec["codes"]["map"] for rec in report["lengths"]}
        assert m["pca_map"] == {str(rec["dim"]): rec["pca"]["map"] for rec in report["lengths"]}
        assert 0 <= m["probe_top1"] <= m["probe_top5"] <= 100 and m["probe_best_top1"] >= m["probe_top1"]
    assert -1.0 <= trained["eigenvalue_spearman"] <= 1.0 and untrained["eigenvalue_spearman"] is None
    assert trained["train_seconds"] > 0
    for split in ("train", "val"):  # stored no larger than 32 px training can use (a 4x crop margin, >= 256)
        assert json.loads((out / "data" / f"{split}.beton.json").read_text())["max_resolution"] == 256
    assert trained["overrides"][-5:] == cmd[-5:]  # the settings it trained with, --set included
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training:" not in again.stdout  # finished runs and their evaluations are reused
    assert json.loads(figures.read_text())["methods"] == data["methods"]
    page = (tmp_path / "results.md").read_text()  # a part of the comparison names what it left out
    assert "Methods not run in this comparison: neuralef, simclr, barlow_twins, spectral_contrastive, matryoshka." in page
    assert "| neuralef_stopgrad |" in page and "| random_init |" in page
    assert " ".join(cmd[-5:]) + "`" in page  # the page names what each method ran with, --set included
    changed = [*cmd, "loss.alpha=0.5"]  # a finished run of other settings is not reported as this one
    refused = subprocess.run(changed, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "training:" not in refused.stdout
    assert "loss.alpha: " in refused.stderr and " -> 0.5" in refused.stderr and "another --out" in refused.stderr


def test_a_dataset_with_more_than_ten_classes_gets_an_online_classifier_of_its_size(tmp_path):
    from PIL import Image

    from eigenmap.data import write_beton

    for c in range(12):
        (tmp_path / "src" / f"class{c:02d}").mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 20 * c, dtype=np.uint8)).save(tmp_path / "src" / f"class{c:02d}" / "0.png")
    write_beton(tmp_path / "src", tmp_path / "train.beton", workers=1)
    # a batch the 12 images fill: the plan needs at least one step
    cfg = _load_bench()._config("neuralef_stopgrad", tmp_path / "run", tmp_path / "train.beton", 1,
                                ["data.batch_size_per_worker=12"])
    assert cfg.model.num_classes == 12


def test_a_tree_with_train_and_test_folders_is_read_and_an_out_of_other_data_is_refused(tmp_path):
    from PIL import Image

    from eigenmap.data import read_manifest

    def tree(root, classes):
        for split in ("train", "Test"):
            for c in classes:
                (root / split / c).mkdir(parents=True)
                Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(root / split / c / "0.png")
        return root

    bench = _load_bench()
    betons = bench.prepare_data(tree(tmp_path / "one", ["a", "b"]), tmp_path / "out", 32)
    assert [read_manifest(b)["classes"] for b in betons] == [["a", "b"], ["a", "b"]]
    assert read_manifest(betons[1])["source"].endswith("/one/Test")
    assert bench.prepare_data(tmp_path / "one", tmp_path / "out", 32) == betons  # the same data: reused
    with pytest.raises(SystemExit, match=r"holds data made from '.*/one/train', not '.*/two/train'; pass another"):
        bench.prepare_data(tree(tmp_path / "two", ["c"]), tmp_path / "out", 32)


def test_the_results_page_holds_every_method_and_the_command():
    bench = _load_bench()
    lengths = ["8", "16", "32", "64", "128", "256", "512"]
    method = {"code_length": 512, "probe_top1": 45.0, "probe_top5": 90.0, "knn20_top1": 41.0, "knn200_top1": 40.0,
              "map_at_100": dict.fromkeys(lengths, 0.3), "random_subset_map": dict.fromkeys(lengths, 0.2),
              "pca_map": dict.fromkeys(lengths, 0.25), "eigenvalue_spearman": -0.9, "train_seconds": 600.0}
    results = {"data": "DATA", "train_images": 100, "val_images": 50, "epochs": 15, "probe_epochs": 100,
               "methods": {name: dict(method, overrides=bench.METHODS[name]) for name in bench.METHODS}}
    results["methods"]["random_init"].update(eigenvalue_spearman=None, train_seconds=0.0)
    results["methods"]["matryoshka"]["map_at_100"] = dict.fromkeys(lengths, 0.4)
    page = bench.results_markdown(results, "python tools/bench_quality.py --json F")
    assert "python tools/bench_quality.py --json F" in page
    for name in bench.METHODS:
        assert f"| {name} | 45.0 | 90.0 | 41.0 | 40.0 |" in page, name
        if name != "matryoshka":  # every method's prefix against its random subset and PCA at each length
            assert all(f"| {name} | {d} | 0.300 | 0.200 | 0.250 | +0.050 |" in page for d in lengths[:-1]), name
    assert f"| matryoshka | 64 | 0.400 | 0.200 | 0.250 | +0.150 | 1 of {len(bench.METHODS)} |" in page
    assert "untrained" in page
    assert "not run" not in page


def test_spearman_is_minus_one_for_a_decreasing_spectrum():
    from eigenmap.eval.spectrum import eigenvalue_order, spearman

    assert eigenvalue_order(np.linspace(1.0, 0.0, 50)) == pytest.approx(-1.0)
    assert spearman([0, 1, 2, 3], [1, 1, 2, 2]) == pytest.approx(0.8944271909999159)  # ties share ranks
