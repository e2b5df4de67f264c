"""tools/bench_retrieval.py runs end to end at a tiny size and writes every figure it promises
(no speed is asserted: the machine running the tests is not the one the targets are for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "bench_retrieval.py"


def test_bench_retrieval_writes_speedups_funnel_and_backend(tmp_path):
    figures = tmp_path / "bench.json"
    cmd = [sys.executable, str(TOOL), "--database", "2000", "--queries", "50", "--dim", "64", "--R", "10",
           "--repeats", "1", "--quiet-wait", "0", "--json", str(figures)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    dims = [r["dim"] for r in data["lengths"]]
    assert dims == [4, 8, 16, 32, 64]  # retrieve's default lengths
    assert all(r["qps"] > 0 and 0 <= r["map"] <= 1 for r in data["lengths"])
    assert data["lengths"][-1]["speedup"] == 1.0
    assert data["speedup_at_1_16"] == data["lengths"][0]["speedup"] > 0  # 64 / 16 = 4 dimensions
    assert data["speedup_at_1_16_round_median"] > 0
    for who in ("raw", "retrieval", "scores_only"):  # bare FAISS, this package, the matmul: the same rounds
        assert data["raw_faiss_comparison"][who]["speedup_at_1_16"] > 0
    assert data["backend"] == "faiss-cpu" and data["device"] == "cpu" and data["index"] == "IndexFlatIP"
    ivf = data["approximate"]["ivf"]
    assert ivf["search"]["index"] == "IndexIVFFlat" and ivf["lengths"][-1]["speedup"] == 1.0
    funnel = data["funnel"]
    assert funnel["short_dim"] == 4 and funnel["rerank_dim"] == 64 and funnel["shortlist_size"] == 20
    assert funnel["qps"] > 0 and funnel["speedup"] > 0 and 0 <= funnel["map"] <= 1
    assert funnel["full_length_map"] == data["lengths"][-1]["map"]
    assert data["settings"]["database"] == 2000 and "bench_retrieval.py" in data["command"]
    assert "backend faiss-cpu on cpu" in done.stdout and "exact speed-up at 1/16 (4 dims)" in done.stdout
    assert "funnel 4 -> 64 dims, 20 shortlisted" in done.stdout and "bare FAISS IndexFlatIP" in done.stdout


@pytest.mark.parametrize("flags, message", [
    (["--R", "500", "--database", "100"], "--R 500 is larger than --database 100"),
    (["--index", "ivf"], "--index takes flat (always"),
    (["--index", "flat,lsh"], "got flat,lsh"),
])
def test_bench_retrieval_rejects_bad_settings_with_a_clear_message(tmp_path, flags, message):
    done = subprocess.run([sys.executable, str(TOOL), *flags], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
