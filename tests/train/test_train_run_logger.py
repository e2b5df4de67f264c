"""Rank-0 TensorBoard/JSONL logging and the eigenvalue plot, read back with TensorBoard's reader."""

from __future__ import annotations

import json

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eigenmap.eval.spectrum import spectrum_figure
from eigenmap.train.run_logger import RunLogger


def test_the_spectrum_figure_draws_the_estimates_in_output_order_and_sorted():
    ev = np.array([0.9, 0.2, 0.5, -0.1])
    lines = spectrum_figure(ev).axes[0].get_lines()
    assert np.array_equal(lines[0].get_ydata(), ev)  # output order: what a prefix keeps
    assert np.array_equal(lines[1].get_ydata(), [0.9, 0.5, 0.2, -0.1])  # sorted, decreasing


def test_rank0_writes_every_tag_and_other_ranks_nothing(tmp_path):
    logger = RunLogger(tmp_path / "r0", rank=0, total_steps=10, progress_bar=False)
    values = {"loss": -3.0, "reg": 5.0, "total": -2.9, "cls_loss": 2.3, "acc": 0.25, "lr": 0.1}
    logger.scalars(5, 0, values, images_per_sec_per_worker=100.0, world_size=2)
    logger.spectrum(5, torch.linspace(1, 0, 16))
    logger.close()
    other = RunLogger(tmp_path / "r1", rank=1, total_steps=10)
    other.scalars(5, 0, values, images_per_sec_per_worker=1.0, world_size=2)
    other.close()
    assert not (tmp_path / "r1").exists()

    acc = EventAccumulator(str(tmp_path / "r0" / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/reg", "train/total", "train/online_acc", "train/lr",
                "perf/images_per_sec_per_worker", "perf/images_per_sec"):
        assert tag in tags["scalars"], tag
    assert acc.Scalars("perf/images_per_sec")[0].value == 200.0
    assert "spectrum/eigenvalues" in tags["histograms"] and "spectrum/eigenvalues_plot" in tags["images"]
    row = json.loads((tmp_path / "r0" / "metrics.jsonl").read_text())
    assert row["step"] == 5 and row["loss"] == -3.0 and row["images_per_sec"] == 200.0
