"""``eigenmap retrieve`` keeps a fuller report of the same pair unless told to replace it.

The command runs in this process on folders of seeded arrays (``codes.npy``, ``labels.npy``),
with ``--out``: no run, no extraction, a real FAISS search.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from launch.cli import main as eigenmap


def _arrays(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    codes = rng.standard_normal((n, 16)).astype(np.float32) + np.eye(4, 16, dtype=np.float32)[labels] * 3
    folder.mkdir(parents=True)
    np.save(folder / "codes.npy", codes)
    np.save(folder / "labels.npy", labels)
    return folder


def _retrieve(tmp_path: Path, out: Path, *extra: str) -> int:
    return eigenmap(["retrieve", "--database", str(tmp_path / "db"), "--queries", str(tmp_path / "q"),
                     "--out", str(out), "--R", "10", "--repeats", "1", "--timing-queries", "0", *extra])


def test_a_narrower_retrieve_of_the_same_pair_is_refused_and_the_fuller_report_kept(tmp_path, capsys):
    _arrays(tmp_path / "db", 300, 0)
    _arrays(tmp_path / "q", 40, 1)
    out = tmp_path / "report"
    assert _retrieve(tmp_path, out) == 0
    full = json.loads((out / "retrieval.json").read_text())
    assert full["dims"] == [4, 8, 16] and full["baselines"] is not None  # the default lengths start at 4
    before = (out / "retrieval.json").read_bytes()
    capsys.readouterr()

    assert _retrieve(tmp_path, out, "--dims", "8", "--no-baselines") == 2
    err = capsys.readouterr().err
    assert "the lengths 4, 16" in err and "--no-baselines" in err and "--overwrite" in err
    assert (out / "retrieval.json").read_bytes() == before

    assert _retrieve(tmp_path, out, "--dims", "4", "8", "16", "--min-timed-seconds", "0") == 0  # as full: a rerun
    assert _retrieve(tmp_path, out, "--dims", "8", "--no-baselines", "--overwrite") == 0
    assert json.loads((out / "retrieval.json").read_text())["dims"] == [8]
