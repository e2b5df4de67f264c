"""Rank-0 TensorBoard/JSONL logging and the eigenvalue plot, read back with TensorBoard's reader."""

from __future__ import annotations

import json

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eigenmap.train.run_logger import RunLogger, spectrum_plot


def test_spectrum_plot_draws_the_curve():
    img = spectrum_plot(np.linspace(1.0, -0.2, 64))
    assert img.shape == (240, 400, 3) and img.dtype == np.uint8
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)
    cols = np.nonzero(blue.any(0))[0]
    assert cols.min() < 60 and cols.max() > 380  # the line spans the x axis
    rows_left, rows_right = np.nonzero(blue[:, cols.min()])[0], np.nonzero(blue[:, cols.max()])[0]
    assert rows_left.mean() < rows_right.mean()  # decreasing values: the curve goes down
    assert spectrum_plot(np.array([np.nan])).shape == (240, 400, 3)


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
