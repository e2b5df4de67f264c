"""run_benchmark and write_report end to end on a small seeded set; every bad input is a
ValueError that names the problem; the package never imports eigenmap or launch."""

from __future__ import annotations

import json
import logging
import statistics
import struct
from pathlib import Path

import numpy as np
import pytest

import retrieval
from retrieval import BaselineSettings, FunnelSettings, SearchSettings, TimingSettings
from retrieval.report import plot_map, plot_qps

ROOT = Path(__file__).resolve().parents[2]


def _clustered(n=1200, nq=40, k=32, classes=8, seed=0):
    """Class-structured codes whose leading dimensions carry most of the class signal."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, k)) * 2
    scale = (np.arange(k) + 1.0) ** -0.7
    db_labels, q_labels = rng.integers(0, classes, n), rng.integers(0, classes, nq)
    db = ((centres[db_labels] + rng.standard_normal((n, k))) * scale).astype(np.float32)
    q = ((centres[q_labels] + rng.standard_normal((nq, k))) * scale).astype(np.float32)
    return db, db_labels, q, q_labels


@pytest.fixture(scope="module")
def results():
    db, db_labels, q, q_labels = _clustered()
    return retrieval.run_benchmark(db, db_labels, q, q_labels, dims=[1, 2, 4, 8, 16, 32], R=10,
                                   timing=TimingSettings(min_seconds=0, repeats=1),
                                   baselines=BaselineSettings(random_draws=3, dims="all", query_sample=None))


def test_results_hold_every_figure_and_the_backend(results):
    json.dumps(results, allow_nan=False)  # plain JSON
    assert results["dims"] == [1, 2, 4, 8, 16, 32] and results["R"] == 10
    assert results["sizes"] == {"database": 1200, "queries": 40, "code_length": 32, "database_dtype": "float32"}
    assert results["search"]["backend"] == "faiss-cpu" and results["search"]["device"] == "cpu"
    assert results["search"]["index"] == "IndexFlatIP" and results["search"]["threads"] >= 1
    assert results["timing"]["interleaved"] is True and results["labels"]["kind"] == "single"
    for rec in results["lengths"]:
        assert rec["qps"] > 0 and len(rec["seconds"]) == 1
        assert set(rec["codes"]) == {"map", "precision", "recall"}
        assert 0 <= rec["pca"]["map"] <= 1 and rec["random_subset"]["map_std"] >= 0
        assert len(rec["random_subset"]["draws"]) == 3
    full = results["lengths"][-1]
    assert full["speedup"] == 1.0 and results["reference_dim"] == 32
    s16 = results["speedup_at_1_16"]  # 32 / 16 = 2 dimensions
    assert s16["median"] == results["lengths"][1]["speedup_median"]
    assert [s16["min"], s16["max"]] == results["lengths"][1]["speedup_range"]
    # class signal sits in the leading dimensions: longer prefixes retrieve better
    maps = [rec["codes"]["map"] for rec in results["lengths"]]
    assert maps[-1] > maps[0] + 0.2
    assert full["random_subset"]["map_std"] == 0 and full["random_subset"]["map_mean"] == full["codes"]["map"]
    funnel = results["funnel"]
    assert funnel["short_dim"] == 2 and funnel["rerank_dim"] == 32 and funnel["shortlist_size"] == 20
    assert funnel["full_length_map"] == full["codes"]["map"] and funnel["qps"] > 0
    assert funnel["map_delta_points"] == pytest.approx(100 * (funnel["map"] - full["codes"]["map"]))
    assert funnel["shortlist"]["backend"] == "faiss-cpu"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_files_table_and_plots(results, tmp_path):
    paths = retrieval.write_report(results, tmp_path / "report")
    assert set(paths) == {"json", "markdown", "map_plot", "qps_plot"}
    assert json.loads(paths["json"].read_text()) == results
    table = paths["markdown"].read_text()
    assert "| length | mAP@10 | P@10 | R@10 | random-subset mAP@10" in table
    assert "faiss-cpu on cpu" in table and "Funnel: shortlist of 20 with 2 dimensions" in table
    assert table.count("\n| ") == 1 + len(results["lengths"])  # header + one row per length
    for key in ("map_plot", "qps_plot"):
        width, height = _png_size(paths[key])
        assert width >= 800 and height >= 500
    ax = plot_map(results).axes[0]
    assert ax.get_xscale() == "log" and "code length" in ax.get_xlabel() and ax.get_ylabel() == "mAP@10"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("prefix" in s for s in labels) and any("random" in s for s in labels) and any("PCA" in s for s in labels)
    ax = plot_qps(results).axes[0]
    assert "queries per second" in ax.get_ylabel() and "faiss-cpu" in ax.get_title()


def test_multi_label_memmap_and_torch_run(tmp_path):
    db, db_labels, q, q_labels = _clustered(n=600, nq=20, k=16)
    mm = np.lib.format.open_memmap(tmp_path / "db.npy", mode="w+", dtype=np.float32, shape=db.shape)
    mm[:] = db
    hot = np.eye(8, dtype=bool)
    out = retrieval.run_benchmark(mm, hot[db_labels], q, hot[q_labels], dims=[4, 16], R=5,
                                  search=SearchSettings(backend="torch", device="cpu", memory_budget_bytes=20_000),
                                  baselines=None, funnel=None, timing=TimingSettings(min_seconds=0, repeats=1), name="features")
    assert out["labels"]["kind"] == "multi" and out["search"]["backend"] == "torch"
    assert out["timing"]["interleaved"] is False and out["lengths"][1]["index"]["resident"] is False
    assert out["funnel"] is None and out["baselines"] is None and out["speedup_at_1_16"] is None
    single = retrieval.run_benchmark(db, db_labels, q, q_labels, dims=[4, 16], R=5, baselines=None,
                                     funnel=None, timing=TimingSettings(min_seconds=0, repeats=1))
    for a, b in zip(out["lengths"], single["lengths"]):  # one label per item: the same relevance
        assert a["codes"] == pytest.approx(b["codes"], abs=1e-12)


def _bad(**change):
    db, db_labels, q, q_labels = _clustered(n=100, nq=5, k=8)
    args = {"database": db, "database_labels": db_labels, "queries": q, "query_labels": q_labels, **change}
    return args


def _settings(search=None, timing=None, **change):
    """A change to run_benchmark's arguments, with the grouped settings made here (inside pytest.raises)."""
    return {"search": SearchSettings(**(search or {})),
            "timing": TimingSettings(**{"repeats": 1, "min_seconds": 0, **(timing or {})}),
            **change}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"R": 101}, "R = 101 is larger than the database"),
        ({"R": 0}, "R must be at least 1"),
        ({"dims": [9]}, r"code length 9 is outside \[1, 8\]"),
        ({"dims": [0, 4]}, r"code length 0 is outside \[1, 8\]"),
        ({"queries": np.ones((5, 6), np.float32)}, "queries have 6 dimensions but the database has 8"),
        ({"database": np.zeros((0, 8), np.float32)}, "database is empty"),
        ({"database": np.ones((100,), np.float32)}, r"database must be a 2-D float array"),
        ({"database": np.ones((100, 8), np.int64)}, "database must hold floats"),
        ({"database_labels": np.zeros(99, int)}, "database labels have 99 entries but there are 100"),
        ({"query_labels": np.zeros(6, int)}, "query labels have 6 entries but there are 5"),
        ({"search": {"memory_budget_bytes": 0}}, "memory_budget_bytes must be a positive integer"),
        ({"search": {"backend": "gpu"}}, "backend must be one of"),
        ({"search": {"index": "ivfpq"}}, "index must be one of flat, ivf, hnsw"),
    ],
)
def test_bad_input_is_named(change, match):
    with pytest.raises(ValueError, match=match):
        retrieval.run_benchmark(**_bad(**{k: v for k, v in change.items() if k != "search"}),
                                **_settings(search=change.get("search")), baselines=None, funnel=None)


@pytest.mark.parametrize("change, match", [
    ({"funnel": {"short_dim": 8}}, r"rerank_dim \(8\) must be longer than short_dim \(8\)"),
    ({"funnel": {"shortlist_size": 0}}, "shortlist_size must be a positive integer"),
    ({"baselines": {"random_draws": 0}}, "random_draws must be a positive integer"),
    ({"timing": {"quiet_wait_seconds": -1}}, "quiet_wait_seconds must be >= 0"),
])
def test_bad_funnel_and_baseline_settings_fail_before_any_index_is_built(change, match):
    with pytest.raises(ValueError, match=match):
        retrieval.run_benchmark(**_bad(), **_settings(timing=change.get("timing")),
                                funnel=FunnelSettings(**change.get("funnel", {})),
                                baselines=BaselineSettings(**change.get("baselines", {})))


@pytest.mark.parametrize("where, value", [("database", np.nan), ("database", np.inf), ("queries", -np.inf)])
def test_non_finite_codes_name_the_row(where, value):
    args = _bad()
    bad = args[where].copy()
    bad[3, 2] = value
    args[where] = bad
    with pytest.raises(ValueError, match=f"{where} row 3 contains NaN or inf"):
        retrieval.run_benchmark(**args, baselines=None, funnel=None, timing=TimingSettings(min_seconds=0, repeats=1))


def test_lengths_over_the_budget_are_rebuilt_every_round_and_their_speedups_stay_paired():
    db, db_labels, q, q_labels = _clustered(n=1000, nq=30, k=32)
    # each length fits alone (32 dims: 128,000 bytes), all six together (63 dims) do not
    args = dict(R=10, baselines=None, timing=TimingSettings(min_seconds=0, repeats=3))
    tight = retrieval.run_benchmark(db, db_labels, q, q_labels, search=SearchSettings(memory_budget_bytes=160_000),
                                    **args)
    roomy = retrieval.run_benchmark(db, db_labels, q, q_labels, **args)
    assert tight["timing"]["interleaved"] is False and roomy["timing"]["interleaved"] is True
    assert "rebuilt" in tight["timing"]["rounds"] and tight["plan"]["held"] is False
    for a, b in zip(tight["lengths"], roomy["lengths"]):  # the same results, however the memory is used
        assert a["codes"] == b["codes"] and a["index"]["in_memory"] is True
    assert tight["funnel"]["map"] == roomy["funnel"]["map"]
    reference = tight["lengths"][-1]["seconds"]
    for rec in tight["lengths"] + [tight["funnel"]]:
        ratios = [r / s for r, s in zip(reference, rec["seconds"])]  # the same round's searches
        assert len(rec["seconds"]) == 3 and rec["speedup_median"] == statistics.median(ratios)
        assert rec["speedup_range"] == [min(ratios), max(ratios)]
        assert rec["speedup"] == min(reference) / min(rec["seconds"])  # the best-of ratio beside them


def test_chance_is_a_random_rankings_map(results):
    _, db_labels, _, q_labels = _clustered()
    prior = float(np.mean([np.mean(db_labels == y) for y in q_labels]))
    chance = results["chance"]
    assert chance["class_prior"] == pytest.approx(prior) and "random ranking" in chance["definition"]
    # random rankings of every query, 250 times over, score the chance level (and not the class
    # prior); the standard error of the simulated mAP is about 0.003
    rng = np.random.default_rng(1)
    labels = np.repeat(q_labels, 250)
    I = rng.permuted(np.tile(np.arange(len(db_labels)), (len(labels), 1)), axis=1)[:, :10]
    simulated = retrieval.retrieval_metrics(I, labels, db_labels, R=10)["map"]
    assert simulated == pytest.approx(chance["map"], abs=0.012) and chance["map"] > prior + 0.05


def test_baselines_on_a_query_sample_at_chosen_lengths_are_compared_on_the_same_queries(tmp_path):
    db, db_labels, q, q_labels = _clustered(n=800, nq=60, k=16)
    out = retrieval.run_benchmark(db, db_labels, q, q_labels, dims=[2, 4, 8, 16], R=10, funnel=None,
                                  timing=TimingSettings(min_seconds=0, repeats=1),
                                  baselines=BaselineSettings(random_draws=2, dims=[2, 16], query_sample=25))
    assert out["baselines"]["dims"] == [2, 16] and out["baselines"]["queries"] == 25
    assert "seeded sample of 25 of the 60 queries" in out["baselines"]["query_sample"]
    by_dim = {rec["dim"]: rec for rec in out["lengths"]}
    assert by_dim[4]["random_subset"] is None and by_dim[4]["pca"] is None
    full = by_dim[16]  # a random 16-subset of 16 dimensions is the code: equal on the same 25 queries
    assert full["random_subset"]["map_mean"] == full["codes_on_baseline_queries"]["map"]
    assert full["random_subset"]["map_difference_stderr"] == 0
    assert by_dim[2]["pca"]["map_difference_stderr"] > 0
    table = retrieval.write_report(out, tmp_path)["markdown"].read_text()
    assert "prefix mAP@10 on the baseline queries" in table and "| — |" in table
    assert "Baselines at lengths 2, 16 on a seeded sample of 25 of the 60 queries" in table


def test_timed_rounds_on_a_query_sample_leave_the_scores_on_every_query_and_say_so(tmp_path):
    db, db_labels, q, q_labels = _clustered(n=800, nq=60, k=16)
    common = dict(R=10, baselines=None, funnel=FunnelSettings(short_dim=2, shortlist_size=40))
    sampled = retrieval.run_benchmark(db, db_labels, q, q_labels, timing=TimingSettings(min_seconds=0, repeats=2, query_sample=25),
                                      **common)
    every = retrieval.run_benchmark(db, db_labels, q, q_labels, timing=TimingSettings(min_seconds=0, repeats=1, query_sample=None),
                                    **common)
    assert sampled["timing"]["queries"] == 25 and every["timing"]["queries"] == 60
    assert sampled["timing"]["query_sample"] == "a seeded sample of 25 of the 60 queries (seed 0)"
    assert every["timing"]["query_sample"] == "all queries"
    for a, b in zip(sampled["lengths"], every["lengths"]):
        assert a["codes"] == b["codes"]  # quality is scored on every query either way
        assert a["qps"] == pytest.approx(25 / min(a["seconds"]))  # q/s over the queries each timed search ran
    assert sampled["funnel"]["map"] == every["funnel"]["map"]
    assert sampled["funnel"]["qps"] == pytest.approx(25 / min(sampled["funnel"]["seconds"]))
    assert sampled["plan"]["timing_queries"] == 25
    table = retrieval.write_report(sampled, tmp_path)["markdown"].read_text()
    assert "The timed rounds searched a seeded sample of 25 of the 60 queries (seed 0)." in table
    assert "estimated before the start" in table and "x the planned work of a plain sweep" in table


def test_the_report_names_its_inputs_the_chance_level_and_the_speedup_spread(results, tmp_path):
    named = {**results, "inputs": {"database": {"path": "/data/train", "content_id": "sha256:ab12"},
                                   "queries": {"path": "/data/val", "content_id": "sha256:cd34"}, "run": None}}
    table = retrieval.write_report(named, tmp_path)["markdown"].read_text()
    head = table.split("Timing:")[0]
    assert "- database: `/data/train` (content_id sha256:ab12)" in head and "- queries: `/data/val`" in head
    assert "- run: none" in head
    assert f"Chance level: mAP@10 {results['chance']['map']:.4f}" in table
    s16 = results["speedup_at_1_16"]
    assert f"median {s16['median']:.2f}x, range {s16['min']:.2f}x to {s16['max']:.2f}x over 1 timed round" in table
    ax = plot_map(results).axes[0]
    chance = [line for line in ax.get_lines() if "chance" in str(line.get_label())]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(results["chance"]["map"])


def test_the_plan_comes_first_then_one_line_per_finished_unit(caplog):
    db, db_labels, q, q_labels = _clustered(n=300, nq=10, k=8)
    with caplog.at_level(logging.INFO, logger="retrieval"):
        retrieval.run_benchmark(db, db_labels, q, q_labels, dims=[1, 2, 4, 8], R=5,
                                timing=TimingSettings(min_seconds=0, repeats=2),
                                baselines=BaselineSettings(random_draws=2, dims="all"))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("retrieval")]
    plan = next(i for i, line in enumerate(lines) if line.startswith("retrieval plan:"))
    units = [line for line in lines if line.startswith("retrieval: ") and " elapsed" in line]
    assert lines.index(units[0]) > plan and any("estimated time" in line for line in lines[plan : lines.index(units[0])])
    # 4 lengths x 3 rounds + the funnel x 3 rounds + the PCA fit + 3 lengths x 2 draws + 1 (the full
    # length's subsets are the code) + 4 PCA lengths
    assert len(units) == 4 * 3 + 3 + 1 + 3 * 2 + 1 + 4
    assert all("left" in line for line in units[:-1]) and not any("\r" in line for line in units)
