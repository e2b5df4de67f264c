"""The run report opens with its findings in words and writes them to report.json.

Each run directory here holds what the commands leave: a resolved config, model weights with
chosen eigenvalue estimates, the retrieval results of a real :func:`retrieval.run_benchmark` on
seeded arrays (codes whose class signal sits in the leading dimensions, or in the trailing
ones), a probe result, status and logs. The report code under test is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import retrieval
from eigenmap.config import from_dict, resolve, to_yaml
from eigenmap.models import build_model
from eigenmap.run import RunDir, export_weights
from launch.findings import verdict
from launch.report import write_run_report

K, CLASSES = 32, 8


def _codes(leading_signal: bool, n: int = 1500, nq: int = 60, seed: int = 0):
    """Class-structured codes whose class signal decays along the dimensions, or (not
    ``leading_signal``) sits in the second half of them alone: the first half is noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, K)) * 2
    signal = (np.arange(K) + 1.0) ** -1.5 if leading_signal else np.r_[np.zeros(K // 2), np.full(K // 2, 0.3)]
    db_labels, q_labels = rng.integers(0, CLASSES, n), rng.integers(0, CLASSES, nq)

    def draw(labels):
        return (centres[labels] * signal + rng.standard_normal((len(labels), K)) * 0.3).astype(np.float32)

    return draw(db_labels), db_labels, draw(q_labels), q_labels


PAIR = "database--queries"  # the report folder of the pair, as `eigenmap retrieve` names it


def _run_dir(tmp_path: Path, *, leading_signal: bool, eigenvalues: np.ndarray,
             baseline_queries: int | None = None) -> Path:
    run_dir = tmp_path / "runs" / "run"
    cfg = resolve(from_dict({"model": {"arch": "resnet18", "projector_hidden_dim": 16, "projector_out_dim": K,
                                       "num_classes": CLASSES},
                             "data": {"train_path": str(tmp_path / "shapes-train.beton"), "batch_size_per_worker": 8},
                             "train": {"run_dir": str(run_dir), "epochs": 1}, "optim": {"warmup_epochs": 0.1}}),
                  train_images=160, steps_per_epoch=20)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    model = build_model(cfg)
    model.l2bn.eigenvalues.copy_(torch.as_tensor(eigenvalues, dtype=torch.float32))
    model.l2bn.num_updates.fill_(20)
    export_weights(model, run_dir)
    (run_dir / "status.json").write_text(json.dumps({"status": "finished", "step": 20, "epoch": 1, "total_steps": 20,
                                                     "metrics": {}, "message": "finished 20 steps"}))
    (run_dir / "attempts.jsonl").write_text("".join(json.dumps({"resumed_from_step": s}) + "\n" for s in (None, 12)))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "epoch": 0, "total": -1.0 - s / 10, "objective": -1.5 - s / 10, "loss": -2.0, "reg": 0.5,
         "alpha": 0.01, "cls_loss": 2.0, "acc": 0.2, "lr": 0.1, "images_per_sec": 100.0}) + "\n"
        for s in range(2, 21, 2)))
    db, db_labels, q, q_labels = _codes(leading_signal)
    folders = {}
    for role, labels in (("database", db_labels), ("queries", q_labels)):
        folders[role] = run_dir / "eval" / "features" / role
        folders[role].mkdir(parents=True)
        np.save(folders[role] / "labels.npy", labels)
    results = retrieval.run_benchmark(db, db_labels, q, q_labels, R=50,
                                      timing=retrieval.TimingSettings(repeats=3, min_seconds=0.02),
                                      baselines=retrieval.BaselineSettings(random_draws=3,
                                                                           query_sample=baseline_queries))
    results["inputs"] = {"run": str(run_dir), "step": 20, **{role: str(f) for role, f in folders.items()}}
    retrieval.write_report(results, RunDir(run_dir).retrieval("codes", PAIR))
    probe = {"num_classes": CLASSES, "device": "cpu", "train": {"num_images": 1500}, "val": {"num_images": 60,
                                                                                           "dataset": "val.beton"},
             "linear_probe": {"protocol": "cached centre-crop features, standardised", "epochs": 3, "lr": 0.1,
                              "batch_size": 256, "top1": 22.0, "top5": 60.0, "best_epoch": 2, "best_top1": 23.0},
             "knn": {"temperature": 0.07, "ks": [20, 200], "top1": {"features": {"20": 25.0, "200": 24.0},
                                                                     "codes": {"20": 21.0, "200": 20.0}}}}
    RunDir(run_dir).probe("train--val").mkdir(parents=True)
    (RunDir(run_dir).probe("train--val") / "probe.json").write_text(json.dumps(probe))
    return run_dir


def _expected_chance(run_dir: Path) -> float:
    return json.loads((RunDir(run_dir).retrieval("codes", PAIR) / "retrieval.json").read_text())["chance"]["map"]


def _findings_text(report: str) -> str:
    return report[report.index("## Findings"):report.index("## Configuration")]


def test_a_run_whose_prefixes_lose_to_the_random_subset_is_reported_as_losing(tmp_path):
    rng = np.random.default_rng(1)
    run_dir = _run_dir(tmp_path, leading_signal=False, eigenvalues=rng.uniform(0.1, 0.9, K))  # unordered
    report = write_run_report(run_dir).read_text()
    data = json.loads((run_dir / "report" / "report.json").read_text())
    words = _findings_text(report)
    rho = data["eigenvalue_order"]["spearman"]
    assert -0.5 < rho < 0.5 and f"Spearman {rho:.3f}" in words and "not ordered by eigenvalue" in words
    short = [row for row in data["retrieval"]["lengths"] if row["dim"] <= K // 4]
    assert all(row["vs_random_subset"]["verdict"] == "behind" for row in short), short
    assert [row["dim"] for row in short] == [4, 8]  # the default lengths start at 4, as the official code's
    assert "**The prefix is behind the random m-subset at m = 4, 8**" in words
    row = short[-1]  # m = 8: the sentence gives both figures and the gap
    gap = row["random_subset"] - row["prefix_on_baseline_queries"]
    assert f"prefix {row['prefix_on_baseline_queries']:.3f}, behind the random subset" in words
    assert f"({row['random_subset']:.3f}) by {gap:.3f}" in words


def test_verdicts_set_the_prefix_beside_the_baselines_on_the_same_sampled_queries(tmp_path):
    run_dir = _run_dir(tmp_path, leading_signal=True, eigenvalues=np.linspace(0.95, 0.05, K), baseline_queries=20)
    write_run_report(run_dir)
    data = json.loads((run_dir / "report" / "report.json").read_text())
    results = json.loads((RunDir(run_dir).retrieval("codes", PAIR) / "retrieval.json").read_text())
    assert data["retrieval"]["baseline_queries"] == results["baselines"]["query_sample"] != "all queries"
    rows = [(row, rec) for row, rec in zip(data["retrieval"]["lengths"], results["lengths"]) if "vs_random_subset" in row]
    assert rows and any(rec["codes"]["map"] != rec["codes_on_baseline_queries"]["map"] for _, rec in rows)
    for row, rec in rows:
        own = rec["codes_on_baseline_queries"]["map"]  # the prefix on the 20 queries the baselines were scored on
        assert row["prefix_on_baseline_queries"] == own and row["prefix"] == rec["codes"]["map"]
        assert row["vs_random_subset"] == verdict(own, rec["random_subset"]["map_mean"], rec["random_subset"]["map_std"])
        assert row["vs_pca"] == verdict(own, rec["pca"]["map"])


def test_a_run_whose_prefixes_win_says_so_with_chance_levels_and_the_speedup_spread(tmp_path):
    run_dir = _run_dir(tmp_path, leading_signal=True, eigenvalues=np.linspace(0.95, 0.05, K))
    report = write_run_report(run_dir).read_text()
    data = json.loads((run_dir / "report" / "report.json").read_text())
    words = _findings_text(report)
    assert data["eigenvalue_order"]["spearman"] == pytest.approx(-1.0)
    assert "Spearman -1.000" in words and "the outputs are ordered by eigenvalue" in words
    results = json.loads((RunDir(run_dir).retrieval("codes", PAIR) / "retrieval.json").read_text())
    for row, rec in zip(data["retrieval"]["lengths"], results["lengths"]):  # the figures, per length
        assert (row["dim"], row["prefix"], row["random_subset"], row["pca"]) == (
            rec["dim"], rec["codes"]["map"], rec["random_subset"]["map_mean"], rec["pca"]["map"])
        assert row["prefix_on_baseline_queries"] == rec["codes"]["map"]  # every query: the same figure
    short = [row for row in data["retrieval"]["lengths"] if row["dim"] <= K // 4]
    assert all(row["vs_random_subset"]["verdict"] == "ahead" for row in short), short
    assert "The prefix is at or above the random m-subset at m <= 8 (k/4)" in words and "behind the random" not in words
    chance = _expected_chance(run_dir)
    assert data["retrieval"]["chance"]["map"] == pytest.approx(chance)
    assert f"against {chance:.3f} by chance" in words
    assert "linear-probe top-1 22.0% (chance 12.5% for 8 classes), 1.8 x chance" in words
    speed, shortest = data["retrieval"]["speed"], results["lengths"][0]  # what the shortest length buys
    assert (speed["dim"], speed["median"], [speed["min"], speed["max"]], speed["work_ratio"]) == (
        4, shortest["speedup_median"], shortest["speedup_range"], K / 4)
    assert f"{speed['median']:.2f}x the full length's queries/s" in words
    # 1,500 rows: far from the 8x of the multiply-adds, and the findings say why
    assert speed["median"] < speed["work_ratio"] / 2 and "bound by costs that do not shrink with m" in words
    # the words of the rest of the report
    assert report.startswith("# Run runs/run: resnet18, NeuralEF stop-grad, k = 32, 20 steps on shapes-train\n")
    assert "Worker-group starts: 2 starts: a fresh start, then a resume from step 12." in report
    assert "[None" not in report and "1 epochs" not in report and "in epoch 1 of 1 (20 steps each)" in report
    assert "20 optimiser steps (train.epochs: 1 epoch of 20 steps, 160 images" in report
    assert "The objective (loss + alpha x reg) at the first log step (2): -1.7" in report


def test_verdicts_are_level_within_two_percent_of_the_baseline_or_its_own_spread():
    assert verdict(0.305, 0.300)["verdict"] == "level"
    assert verdict(0.310, 0.300)["verdict"] == "ahead" and verdict(0.290, 0.300)["verdict"] == "behind"
    assert verdict(0.290, 0.300)["difference"] == pytest.approx(-0.01)
    assert verdict(0.290, 0.300, spread=0.012)["verdict"] == "level"  # within the draws' standard deviation
    assert verdict(0.285, 0.300, spread=0.012)["verdict"] == "behind"


def test_the_readme_demo_quote_is_generated_from_the_runs_report_in_its_own_words(tmp_path):
    from script_loader import load_script

    run_dir = _run_dir(tmp_path, leading_signal=True, eigenvalues=np.linspace(0.95, 0.05, K))
    report = write_run_report(run_dir).read_text()
    (run_dir / "demo.json").write_text(json.dumps({"stage_seconds": {"train": 300.0, "retrieval": 20.5},
                                                   "device": "cpu (2 cores)"}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-quote:start -->\nold words\n<!-- demo-quote:end -->\nrest\n")
    tool = load_script("tools/demo_quote.py")
    assert tool.main([str(run_dir), "--readme", str(readme), "--date", "2026-12-07",
                      "--json", str(tmp_path / "q.json")]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- demo-quote:start -->\n> **Eigenvalue order:**") and text.endswith("rest\n")
    quoted = [line[2:] for line in text.splitlines() if line.startswith("> - m = ")]
    assert quoted and all(line in report for line in quoted)  # the report's own lines, m <= k/4 only
    assert [line.split()[3] for line in quoted] == ["4", "8"] and "old words" not in text
    figures = json.loads((tmp_path / "q.json").read_text())
    assert figures["demo_seconds"] == 320.5 and figures["steps"] == "20" and "2026-12-07" in text
