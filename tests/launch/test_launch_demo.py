"""`eigenmap demo` end to end at a reduced size: data split, training on the embedded cluster,
probe, kNN, retrieval and the report, as `make demo` runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from launch_helpers import REPO, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_the_demo_pipeline_writes_a_report_with_every_part(imagenette_subset, tmp_path):
    # A folder as people have them: a macOS .DS_Store and a notes file among the images. Half of
    # each class is held out, so the training set (about 80 images) is smaller than the demo's
    # global batch (2 x 64) and than the default R = 100: both shrink to fit it.
    folder = tmp_path / "folder"
    shutil.copytree(imagenette_subset, folder)
    classes = sorted(p for p in folder.iterdir())
    (classes[0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (classes[1] / "notes.txt").write_text("photographed in 2024\n")
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "launch.cli", "demo", "--data", str(folder), "--holdout", "0.5",
           "--out-dir", str(out), "--max-steps", "6", "--json", str(tmp_path / "demo.json"),
           "model.projector_hidden_dim=64", "model.projector_out_dim=64",
           "train.log_every_steps=2", "train.checkpoint_every_steps=100", "eval.probe_epochs=3"]
    done = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert set(summary["stage_seconds"]) == {"prepare data", "train", "linear probe and kNN", "retrieval", "report"}
    # the counts are the images the files hold: 4 classes x 40 images, the two stray files skipped (in train)
    statement = summary["data_statement"]
    assert "seeded holdout: 50% of every class's image files (seed 0)" in statement, statement
    written = [json.loads((out / "data" / f"folder-{s}.beton.json").read_text())["num_images"] for s in ("train", "val")]
    assert written == [80, 80], written  # half of each class's 40 images: the stray files count in neither
    assert f"Training set: {written[0]} images; validation set: {written[1]};" in statement, statement
    assert "2 files were not usable images and were skipped" in statement, statement
    assert "stored at most 256 px on the longer side (training crops 32 px)" in statement, statement
    assert json.loads((out / "data" / "folder-train.beton.json").read_text())["max_resolution"] == 256
    assert f"The training batch is lowered to {written[0] // 2} per worker" in statement, statement
    assert f"mAP@{written[0]}, not mAP@100" in statement, statement
    retrieval = json.loads((out / "run" / "eval" / "retrieval" / "codes" / "folder-train--folder-val" / "retrieval.json").read_text())
    assert retrieval["R"] == written[0]  # capped at the database size, not failed
    report_dir = out / "run" / "report"
    report = (report_dir / "report.md").read_text()
    for heading in ("## Configuration", "## The demo's data and stages", "## Training", "## Eigenvalue spectrum",
                    "## Linear probe and kNN", "## Retrieval with adaptive-length codes"):
        assert heading in report, heading
    for png in ("training_curves.png", "spectrum.png", "retrieval_map.png", "retrieval_qps.png"):
        assert (report_dir / png).stat().st_size > 10_000, png
        assert f"]({png})" in report, png
    assert "top-1" in report and "| codes |" in report and "random-subset mAP@" in report and "PCA mAP@" in report
    assert "backend faiss-cpu on cpu" in report and "tensorboard --logdir" in report
    assert "Not run yet" not in report
    # kNN's k = 200 is more than the training set holds: the report says all of it voted
    assert f"k = 200 exceeds the {written[0]} training images: all {written[0]} vote" in report
    assert "k = 20, k = 200 exceed" not in report  # 20 fits it
    assert summary["report"] == str(report_dir / "report.md")
    announced = [line for line in done.stdout.splitlines() if line.startswith("report: ")]
    assert len(announced) == 1, done.stdout  # written once, announced once
    # demo.json is written once, before the report, which lists the stages before it; the report's
    # own time is in --json
    assert "| report |" not in report and "| **all before this report** |" in report
    assert set(json.loads((out / "run" / "demo.json").read_text())["stage_seconds"]) == (
        set(summary["stage_seconds"]) - {"report"})
    # the findings open the report, go to report.json, and are printed at the end of the demo
    assert report.index("## Findings") < report.index("## Configuration")
    findings = json.loads((report_dir / "report.json").read_text())
    assert {"eigenvalue_order", "retrieval", "classification"} <= set(findings)
    assert "## Findings" in done.stdout and "**Eigenvalue order:** Spearman" in done.stdout

    # the same demo again: nothing is trained, probed or measured again; the same report, in seconds
    products = [out / "run" / name for name in ("model.pt", "status.json", "metrics.jsonl")] + [
        p for p in (out / "run" / "eval").rglob("*.json")]
    before = {p: p.read_bytes() for p in products}
    again = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    rerun = json.loads((tmp_path / "demo.json").read_text())
    assert rerun["total_seconds"] < 60, rerun["stage_seconds"]
    assert set(rerun["reused_stages"]) == {"prepare data", "train", "linear probe and kNN", "retrieval"}
    assert {p: p.read_bytes() for p in products} == before
    assert (report_dir / "report.md").read_text() == report
