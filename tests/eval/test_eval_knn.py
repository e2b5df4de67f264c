"""Weighted kNN: the same predictions as a brute-force loop, and clear errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eigenmap.eval.knn import knn_predict, knn_top1


def _brute_force(train_x, train_y, test_x, k, temperature, num_classes):
    preds = []
    for q in test_x:
        sims = [float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x))) for x in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[int(train_y[i])] += math.exp(sims[i] / temperature)
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return np.array(preds)


def test_knn_matches_a_brute_force_loop_for_every_k():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    train_y = rng.integers(0, 4, size=120)
    train_x = centres[train_y] + rng.normal(scale=1.5, size=(120, 8))
    test_y = rng.integers(0, 4, size=40)
    test_x = centres[test_y] + rng.normal(scale=1.5, size=(40, 8))
    preds = knn_predict(train_x, train_y, test_x, ks=[1, 5, 20, 120], temperature=0.07, num_classes=4, chunk_size=7)
    for k, got in preds.items():
        assert np.array_equal(got.numpy(), _brute_force(train_x, train_y, test_x, k, 0.07, 4)), k


def test_knn_top1_is_the_share_of_correct_predictions_in_percent():
    train_x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = np.array([0, 0, 1, 1])
    test_x = np.array([[1.0, 0.05], [0.05, 1.0], [0.8, 0.2]])
    test_y = np.array([0, 1, 1])  # the third is misclassified by its neighbours
    acc = knn_top1(train_x, train_y, test_x, test_y, ks=(1, 2, 200), num_classes=2)
    assert acc[1] == pytest.approx(200 / 3) and acc[2] == pytest.approx(200 / 3)
    assert set(acc) == {1, 2, 200}  # k above the training set's size is capped, reported as asked


@pytest.mark.parametrize("kwargs,message", [
    ({"test_x": np.ones((2, 3))}, "one width"),
    ({"train_x": np.zeros((0, 2)), "train_y": np.zeros(0)}, "non-empty"),
    ({"ks": [0]}, r"outside \[1, 4\]"),
    ({"test_x": np.array([[np.nan, 1.0]])}, "NaN or inf"),
    ({"train_y": np.zeros(3)}, "one label per training row"),
])
def test_bad_knn_input_is_named(kwargs, message):
    args = {"train_x": np.eye(2).repeat(2, axis=0), "train_y": np.array([0, 0, 1, 1]),
            "test_x": np.eye(2), "ks": [1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_predict(args["train_x"], args["train_y"], args["test_x"], ks=args["ks"])


def test_knn_accepts_torch_tensors():
    x = torch.eye(3)
    assert knn_predict(x, torch.tensor([0, 1, 2]), x, ks=[1])[1].tolist() == [0, 1, 2]


class _RowReads:
    """A memory-mapped [N, D] database that records how many rows each read asks for and
    refuses to be converted whole, as a database larger than memory must never be."""

    def __init__(self, path):
        self.rows = np.load(path, mmap_mode="r")
        self.shape, self.reads = self.rows.shape, []

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, rows: slice):
        block = self.rows[rows]
        self.reads.append(len(block))
        return block

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole database was loaded")


def test_knn_reads_a_memory_mapped_database_in_blocks_within_its_memory_budget(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    train_y = rng.integers(0, 5, size=300)
    train_x = (centres[train_y] + rng.normal(scale=2.0, size=(300, 16))).astype(np.float32)
    test_x = (centres[rng.integers(0, 5, size=50)] + rng.normal(scale=2.0, size=(50, 16))).astype(np.float32)
    np.save(tmp_path / "train.npy", train_x)
    database = _RowReads(tmp_path / "train.npy")
    budget = 4 * (16 + 20) * 32  # 32 rows and their scores against 20 queries
    preds = knn_predict(database, train_y, test_x, ks=[1, 7, 40], temperature=0.07, num_classes=5, chunk_size=20,
                        memory_budget_bytes=budget)
    assert max(database.reads) == 32 and sum(database.reads) == 300  # each row read once, 10 blocks
    for k, got in preds.items():
        assert np.array_equal(got.numpy(), _brute_force(train_x, train_y, test_x, k, 0.07, 5)), k


def test_a_knn_memory_budget_below_one_row_is_refused_naming_the_minimum():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"got 31; accepted: an integer number of bytes of at least 32"):
        knn_predict(x, np.arange(4), x, ks=[1], chunk_size=8, memory_budget_bytes=31)  # 4 queries of width 4


def test_nan_in_a_later_database_block_is_named_with_its_rows():
    x = np.ones((10, 2), dtype=np.float32)
    x[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf \(rows 6-8\)"):
        knn_predict(x, np.zeros(10), x[:2], ks=[1], chunk_size=2, memory_budget_bytes=4 * (2 + 2) * 3)


def _plain_faiss_vote(train_x, train_y, test_x, ks, temperature, num_classes, block_rows):
    """A plain blocked FAISS top-k (faiss.knn per block, ResultHeap merge) and the same vote."""
    import faiss

    xq = np.array(test_x, dtype=np.float32)
    faiss.normalize_L2(xq)
    heap = faiss.ResultHeap(len(xq), max(ks), keep_max=True)
    for b0 in range(0, len(train_x), block_rows):
        xb = np.array(train_x[b0:b0 + block_rows], dtype=np.float32)
        faiss.normalize_L2(xb)
        D, I = faiss.knn(xq, xb, min(max(ks), len(xb)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(D, I + b0)
    heap.finalize()
    out = {}
    for k in ks:
        votes = np.zeros((len(xq), num_classes))
        np.add.at(votes, (np.arange(len(xq))[:, None], train_y[heap.I[:, :k]]), np.exp(heap.D[:, :k] / temperature))
        out[k] = votes.argmax(axis=1)
    return out


def _brute_force_vote(train_x, train_y, test_x, ks, temperature, num_classes):
    """Every similarity in float64, a full sort, the vote: vectorised, for larger seeded sets."""
    xb = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    xq = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sims = xq.astype(np.float64) @ xb.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")
    out = {}
    for k in ks:
        nearest = order[:, :k]
        votes = np.zeros((len(xq), num_classes))
        np.add.at(votes, (np.arange(len(xq))[:, None], train_y[nearest]),
                  np.exp(np.take_along_axis(sims, nearest, axis=1) / temperature))
        out[k] = votes.argmax(axis=1)
    return out


def test_knn_over_many_blocks_predicts_as_a_brute_force_vote_and_a_plain_faiss_search(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, 48))
    train_y = rng.integers(0, 12, size=5000)
    np.save(tmp_path / "train.npy", (centres[train_y] + rng.normal(scale=2.5, size=(5000, 48))).astype(np.float32))
    train_x = np.load(tmp_path / "train.npy", mmap_mode="r")
    test_y = rng.integers(0, 12, size=300)
    test_x = (centres[test_y] + rng.normal(scale=2.5, size=(300, 48))).astype(np.float32)
    ks = [1, 20, 200]
    budget = 4 * (48 + 300) * 700  # 700 rows per block: 8 blocks, the last one short
    preds = knn_predict(train_x, train_y, test_x, ks=ks, temperature=0.07, num_classes=12, chunk_size=300,
                        memory_budget_bytes=budget)
    brute = _brute_force_vote(np.asarray(train_x), train_y, test_x, ks, 0.07, 12)
    plain = _plain_faiss_vote(train_x, train_y, test_x, ks, 0.07, 12, block_rows=1000)
    for k in ks:
        assert np.array_equal(preds[k].numpy(), brute[k]), k
        assert np.array_equal(preds[k].numpy(), plain[k]), k
    assert 30 < 100 * np.mean(preds[20].numpy() == test_y) < 100  # neither trivial nor hopeless


def _rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def test_knn_memory_stays_within_its_budget_plus_the_stated_overhead(tmp_path):
    """One block at a time, read into one reused buffer: the anonymous memory the search adds
    stays below the budget plus FIXED_OVERHEAD_BYTES plus what grows with the queries (the old
    search held the block three times over, and its [chunk, rows] scores, at once)."""
    import threading

    from eigenmap.eval.knn import FIXED_OVERHEAD_BYTES

    rows, dim, queries, k = 200_000, 128, 256, 20
    database = np.lib.format.open_memmap(tmp_path / "db.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for i0 in range(0, rows, 50_000):
        database[i0:i0 + 50_000] = rng.standard_normal((50_000, dim), dtype=np.float32)
    database.flush()
    database = np.load(tmp_path / "db.npy", mmap_mode="r")
    labels = rng.integers(0, 10, rows)
    test_x = rng.standard_normal((queries, dim), dtype=np.float32)
    budget = 48 << 20
    grows_with_queries = queries * dim * 4 + queries * k * 24 + rows * 8
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon_bytes())
            done.wait(0.001)

    knn_predict(database[:1000], labels[:1000], test_x, ks=[k], chunk_size=queries)  # libraries warmed up
    before = _rss_anon_bytes()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        knn_predict(database, labels, test_x, ks=[k], chunk_size=queries, memory_budget_bytes=budget)
    finally:
        done.set()
        sampler.join()
    assert peak[0] - before <= budget + FIXED_OVERHEAD_BYTES + grows_with_queries, (peak[0] - before) / 2**20


def test_knn_report_scores_each_named_pair_alike(caplog):
    from eigenmap.eval.knn import knn_report

    rng = np.random.default_rng(3)
    train_y, test_y = rng.integers(0, 3, 90), rng.integers(0, 3, 30)
    train = {"features": rng.normal(size=(90, 6)), "codes": rng.normal(size=(90, 4))}
    test = {"features": rng.normal(size=(30, 6)), "codes": rng.normal(size=(30, 4))}
    report = knn_report(train, train_y, test, test_y, ks=(5, 200), num_classes=3, memory_budget_bytes=1 << 20)
    assert report["ks"] == [5, 200] and report["memory_budget_bytes"] == 1 << 20 and report["device"] == "cpu"
    for name in ("features", "codes"):
        expected = knn_top1(train[name], train_y, test[name], test_y, ks=(5, 200), num_classes=3)
        assert report["top1"][name] == {str(k): v for k, v in expected.items()} and report["seconds"][name] > 0
    with pytest.raises(ValueError, match=r"same arrays of both sets; got \['codes', 'features'\] and \['codes'\]"):
        knn_report(train, train_y, {"codes": test["codes"]}, test_y)
