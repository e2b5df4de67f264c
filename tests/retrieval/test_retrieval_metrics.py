"""mAP@R, precision@R, recall@R: hand-computed cases, a brute force over full sorted similarity
lists (ties, multi-label), independence from the order of equal scores, and label errors."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from retrieval.metrics import per_query_metrics, prepare_labels, relevant_counts, retrieval_metrics


def test_single_label_by_hand():
    # query label 0; the top 5 have labels 0 1 0 0 1 -> relevant at ranks 1, 3, 4
    # AP@5 = (1/1 + 2/3 + 3/4) / 3 = (12 + 8 + 9) / 36 = 29/36;  P@5 = 3/5
    # the database holds four items of label 0 (ids 0, 2, 3, 5) -> R@5 = 3/4
    db_labels = np.array([0, 1, 0, 0, 1, 0])
    I = np.array([[0, 1, 2, 3, 4]])
    got = retrieval_metrics(I, np.array([0]), db_labels, R=5)
    assert got["map"] == pytest.approx(29 / 36, abs=1e-15)
    assert got["precision"] == pytest.approx(3 / 5, abs=1e-15)
    assert got["recall"] == pytest.approx(3 / 4, abs=1e-15)


def test_ties_by_hand():
    # scores 0.9 0.8 0.8 0.5, relevant 0 1 0 1: ranks 2-3 tie, one relevant item among them
    # the tied relevant item is at rank 2 or 3 with probability 1/2 each: (1/2 + 1/3) / 2 = 5/12
    # rank 4: 2 relevant items in the top 4 -> 2/4;  AP@4 = (5/12 + 6/12) / 2 = 11/24
    db_labels = np.array([1, 0, 1, 0])
    D = np.array([[0.9, 0.8, 0.8, 0.5]], dtype=np.float32)
    I = np.array([[0, 1, 2, 3]])
    got = retrieval_metrics(I, np.array([0]), db_labels, D=D)
    assert got["map"] == pytest.approx(11 / 24, abs=1e-15)
    # the other order of the tie gives the same figure; without scores, the order is strict
    swapped = retrieval_metrics(np.array([[0, 2, 1, 3]]), np.array([0]), db_labels, D=D)
    assert swapped["map"] == got["map"]
    strict = retrieval_metrics(I, np.array([0]), db_labels)
    assert strict["map"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)


def test_multi_label_by_hand():
    # query labels {0, 2}; the top 4 have labels {1}, {2, 3}, {0}, {} -> relevant at ranks 2, 3
    # AP@4 = (1/2 + 2/3) / 2 = 7/12;  P@4 = 2/4;  relevant in the database: ids 1, 2, 4 -> R@4 = 2/3
    db = [[1], [2, 3], [0], [], [0, 2]]
    got = retrieval_metrics(np.array([[0, 1, 2, 3]]), [[0, 2]], db)
    assert got["map"] == pytest.approx(7 / 12, abs=1e-15)
    assert got["precision"] == pytest.approx(1 / 2, abs=1e-15)
    assert got["recall"] == pytest.approx(2 / 3, abs=1e-15)
    multi_hot = np.zeros((5, 4), dtype=bool)
    for i, labels in enumerate(db):
        multi_hot[i, labels] = True
    same = retrieval_metrics(np.array([[0, 1, 2, 3]]), np.array([[1, 0, 1, 0]]), multi_hot)
    mixed = retrieval_metrics(np.array([[0, 1, 2, 3]]), [[0, 2]], multi_hot)  # a label list beside multi-hot
    assert same == got == mixed


def test_none_relevant_in_the_top_scores_zero_and_missing_ids_are_not_relevant():
    db_labels = np.array([1, 1, 0])
    got = retrieval_metrics(np.array([[0, 1, -1]]), np.array([0]), db_labels, D=np.array([[3.0, 2.0, -np.inf]]))
    assert got == {"map": 0.0, "precision": 0.0, "recall": 0.0, "queries_without_relevant": 0}


def _brute_force(q, db, q_sets, db_sets, R):
    """Plain loops over the full similarity list sorted by (score desc, id asc); each tie group's
    contribution to AP averaged over every placement of its relevant items (exact fractions)."""
    out = []
    for qi in range(len(q)):
        sims = [(sum(int(a) * int(b) for a, b in zip(q[qi], db[j])), j) for j in range(len(db))]
        sims.sort(key=lambda s: (-s[0], s[1]))
        top = sims[:R]
        rel = [bool(q_sets[qi] & db_sets[j]) for _, j in top]
        total, before, pos = Fraction(0), 0, 0
        while pos < R:
            end = pos
            while end + 1 < R and top[end + 1][0] == top[pos][0]:
                end += 1
            n, r = end - pos + 1, sum(rel[pos : end + 1])
            placements = list(itertools.combinations(range(n), r))
            group = Fraction(0)
            for places in placements:
                for seen, p in enumerate(places, start=1):
                    group += Fraction(before + seen, pos + p + 1)
            total += group / len(placements)
            before += r
            pos = end + 1
        hits = sum(rel)
        in_db = sum(1 for j in range(len(db)) if q_sets[qi] & db_sets[j])
        out.append({"ap": float(total / hits) if hits else 0.0, "precision": hits / R,
                    "recall": hits / in_db if in_db else 0.0, "ids": [j for _, j in top],
                    "scores": [s for s, _ in top]})
    return out


@pytest.mark.parametrize("multi_label", [False, True])
def test_brute_force_with_ties(multi_label):
    rng = np.random.default_rng(7)
    distinct = rng.integers(-20, 21, size=(100, 6))
    db = distinct[rng.integers(0, 100, 300)]  # repeated rows: exact ties in groups of a few
    q = rng.integers(-20, 21, size=(25, 6))
    if multi_label:
        db_hot, q_hot = rng.random((300, 6)) < 0.25, rng.random((25, 6)) < 0.3
        db_labels, q_labels = db_hot, q_hot
        db_sets = [set(np.flatnonzero(r)) for r in db_hot]
        q_sets = [set(np.flatnonzero(r)) for r in q_hot]
    else:
        db_labels, q_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 25)
        db_sets, q_sets = [{int(x)} for x in db_labels], [{int(x)} for x in q_labels]
    R = 30
    expected = _brute_force(q, db, q_sets, db_sets, R)
    assert any(len(set(e["scores"])) < R for e in expected), "the data should produce ties"

    scores = (q @ db.T).astype(np.float64)
    ids = np.broadcast_to(np.arange(len(db)), scores.shape)
    order = np.lexsort((ids, -scores), axis=-1)[:, :R]
    I, D = order, np.take_along_axis(scores, order, axis=1)
    assert I.tolist() == [e["ids"] for e in expected]
    query, database = prepare_labels(q_labels, db_labels, len(q), len(db))
    got = per_query_metrics(I, query, database, D=D, R=R)
    for key in ("ap", "precision", "recall"):
        np.testing.assert_allclose(got[key], [e[key] for e in expected], rtol=0, atol=1e-12)

    # any other order inside the groups of equal scores gives the same figures
    shuffled_I = I.copy()
    for row in range(len(I)):
        keys = rng.random(R)
        perm = np.lexsort((keys, -D[row]))
        shuffled_I[row] = I[row, perm]
    again = per_query_metrics(shuffled_I, query, database, D=D, R=R)
    for key in ("ap", "precision", "recall"):
        np.testing.assert_allclose(again[key], got[key], rtol=0, atol=1e-12)
    means = retrieval_metrics(shuffled_I, q_labels, db_labels, D=D, R=R)
    assert means["map"] == pytest.approx(np.mean([e["ap"] for e in expected]), abs=1e-12)


def test_relevant_counts_single_and_multi_label():
    single_q, single_db = prepare_labels(np.array([3, 7, 1]), np.array([1, 3, 3, 5, 1, 1]), 3, 6)
    assert relevant_counts(single_q, single_db).tolist() == [2, 0, 3]
    multi_q, multi_db = prepare_labels([[0], [1, 2], []], [[0, 1], [2], [], [1]], 3, 4)
    assert relevant_counts(multi_q, multi_db).tolist() == [1, 3, 0]


def test_string_labels_work_like_integers():
    got = retrieval_metrics(np.array([[0, 1]]), np.array(["cat"]), np.array(["cat", "dog", "cat"]))
    assert got["precision"] == 0.5 and got["recall"] == 0.5


@pytest.mark.parametrize(
    "q_labels, db_labels, match",
    [
        (np.array([0, 1]), np.array([0, 1, 1]), "query labels have 2 entries but there are 1 query rows"),
        (np.array([0]), np.array([0, 1]), "database labels have 2 entries but there are 3 database rows"),
        (np.array([0.5]), np.array([0, 1, 1]), "floats"),
        (np.array([0]), np.ones((3, 2), dtype=bool), "single-label but database labels are multi-label"),
        (np.ones((1, 3), dtype=bool), np.ones((3, 2), dtype=bool), "widths differ"),
        (np.ones((1, 2)) * 2, np.ones((3, 2)), "multi-hot"),
        ([[0, -1]], [[0], [1], [2]], "negative label"),
    ],
)
def test_bad_labels_are_named(q_labels, db_labels, match):
    with pytest.raises(ValueError, match=match):
        prepare_labels(q_labels, db_labels, n_queries=1, n_database=3)


def test_R_longer_than_the_lists_is_an_error():
    with pytest.raises(ValueError, match="R = 5 needs neighbour lists of at least R"):
        retrieval_metrics(np.array([[0, 1]]), np.array([0]), np.array([0, 1]), R=5)
