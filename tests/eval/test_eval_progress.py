"""Long evaluation loops (kNN blocks, probe epochs, extraction) report progress with an estimate
of the time left as plain log lines when the output is not a terminal."""

from __future__ import annotations

import logging

import numpy as np

from eigenmap.eval.knn import knn_predict
from eigenmap.eval.linear_probe import train_probe
from retrieval.progress import Progress, clock


def _lines(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == logging.INFO]


def test_progress_lines_are_plain_text_with_an_estimate_and_rate_limited(caplog):
    logger = logging.getLogger("eigenmap.test_progress")
    progress = Progress(50, "work", unit="unit", every_seconds=3600, terminal=False, logger=logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for done in range(1, 51):
            progress.update(1, f"detail {done}")
        progress.close()
    lines = _lines(caplog, logger.name)
    assert len(lines) == 2  # the first and the last unit; the rest fall inside the interval
    assert lines[0].startswith("work: 1/50 units (2%), ") and "left" in lines[0] and lines[0].endswith("; detail 1")
    assert lines[1].startswith("work: 50/50 units (100%), ") and lines[1].endswith("; detail 50")
    assert not any(c in "".join(lines) for c in "\r\x1b")
    assert clock(3725.2) == "1:02:05" and clock(75) == "1:15"


def test_knn_logs_each_database_block_with_an_estimate(caplog):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    budget = 4 * (8 + 20) * 100  # 100 rows per block: 3 blocks
    with caplog.at_level(logging.INFO, logger="eigenmap.eval.knn"):
        knn_predict(x, rng.integers(0, 3, 300), x[:20], ks=[5], chunk_size=20, memory_budget_bytes=budget)
    lines = _lines(caplog, "eigenmap.eval.knn")
    assert lines[0].startswith("kNN: 1/3 blocks (33%)") and "left" in lines[0], lines
    assert "100 of 300 training rows" in lines[0]
    assert lines[-1].startswith("kNN: 3/3 blocks (100%)")


def test_the_probe_logs_its_epochs_with_an_estimate(caplog):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
    with caplog.at_level(logging.INFO, logger="eigenmap.eval.linear_probe"):
        train_probe(x, y, x, y, num_classes=2, epochs=3, batch_size=32)
    lines = _lines(caplog, "eigenmap.eval.linear_probe")
    assert lines[0].startswith("linear probe: 1/3 epochs (33%)") and "left" in lines[0] and "val top-1" in lines[0]
    assert lines[-1].startswith("linear probe: 3/3 epochs (100%)")
