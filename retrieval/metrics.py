"""mAP@R, precision@R and recall@R from ranked neighbour lists, single- or multi-label.

Definitions (for one query; the reported figures are means over all queries):

- relevant: a database item is relevant to a query when they share at least one label.
- precision@R = (relevant items in the top R) / R.
- recall@R = (relevant items in the top R) / (relevant items in the whole database); 0 for a
  query with no relevant item in the database (such queries are counted and logged).
- AP@R = the mean of precision@k over the ranks k <= R that hold a relevant item, i.e.
  sum_{k <= R, rel_k} precision@k / (relevant items in the top R); 0 when the top R holds
  none. This is the HashNet / DeepHash-pytorch definition: the denominator is the relevant count
  inside the top R, not in the whole database (which would make AP@R a recall-weighted figure).
  Matryoshka Representation Learning's retrieval code divides the same sum by R instead, which
  is never higher (docs/multilabel.md compares the definitions).
- ties: items with equal scores inside the returned list form a group whose internal order is
  arbitrary. AP@R is the expectation over all orders of each group (McSherry & Najork 2008):
  for a group at ranks a..a+n-1 holding r relevant items after c relevant ones, position j
  (1-based in the group) contributes (r/n) (c + 1 + (j-1)(r-1)/(n-1)) / (a+j-1). Precision and
  recall do not depend on the order inside the list. Which of several equal scores enter the
  list when a group straddles rank R is the search backend's choice (FAISS keeps the first
  seen); the indexes here then order the list by (score descending, id ascending).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 64 << 20  # temporaries of the multi-label relevance computations


@dataclass(frozen=True)
class Labels:
    """Labels of n items: ``kind == "single"`` holds ``values [n]`` (any non-float dtype);
    ``kind == "multi"`` holds a multi-hot ``values [n, C]`` bool matrix."""

    kind: str
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def _as_labels(labels, name: str, num_classes: int | None) -> Labels:
    if isinstance(labels, Labels):
        return labels
    if isinstance(labels, (list, tuple)) and labels and all(
        isinstance(x, (list, tuple, set, frozenset, np.ndarray)) for x in labels
    ):
        values = [int(v) for x in labels for v in x]
        if values and min(values) < 0:
            raise ValueError(f"{name} lists hold a negative label ({min(values)}); labels must be integers >= 0")
        width = num_classes or 1 + max(values, default=0)
        hot = np.zeros((len(labels), width), dtype=bool)
        for i, x in enumerate(labels):
            hot[i, list(x)] = True
        return Labels("multi", hot)
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if arr.dtype.kind == "f":
            raise ValueError(
                f"{name} are floats ({arr.dtype}); single-label sets need integer (or string) labels [n]"
            )
        return Labels("single", arr)
    if arr.ndim == 2:
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} [n, C] must be multi-hot: 0/1 or bool values; got dtype {arr.dtype}")
        return Labels("multi", arr.astype(bool))
    raise ValueError(
        f"{name} must be labels [n] (single-label), multi-hot [n, C], or a list of label lists; "
        f"got an array of shape {arr.shape}"
    )


def prepare_labels(query_labels, database_labels, n_queries: int, n_database: int) -> tuple[Labels, Labels]:
    """Check and convert both label sets to :class:`Labels` of the same kind.

    Accepted: integer (or string) labels ``[n]``; multi-hot ``[n, C]`` (bool or 0/1); a list of
    label lists (converted to multi-hot over the labels seen in both sets).

    Raises:
        ValueError: wrong lengths, kinds that differ, multi-hot widths that differ, float labels.
    """
    both = [query_labels, database_labels]
    lists = [isinstance(x, (list, tuple)) and len(x) > 0 and not np.isscalar(x[0]) for x in both]
    num_classes = None  # label lists become multi-hot as wide as the other set's, or the largest label + 1
    if any(lists):
        arrays = [np.asarray(x.values if isinstance(x, Labels) else x)
                  for x, is_list in zip(both, lists) if not is_list]
        seen = [int(v) for labels, is_list in zip(both, lists) if is_list for x in labels for v in x]
        num_classes = max([a.shape[1] for a in arrays if a.ndim == 2] + [1 + max(seen, default=0)])
    q = _as_labels(query_labels, "query labels", num_classes)
    db = _as_labels(database_labels, "database labels", num_classes)
    for labels, n, name in ((q, n_queries, "query labels"), (db, n_database, "database labels")):
        if len(labels) != n:
            raise ValueError(
                f"{name} have {len(labels)} entries but there are {n} {name.split()[0]} rows; give one per row"
            )
    if q.kind != db.kind:
        raise ValueError(
            f"query labels are {q.kind}-label but database labels are {db.kind}-label; give both as labels [n] "
            "or both as multi-hot [n, C]"
        )
    if q.kind == "multi" and q.values.shape[1] != db.values.shape[1]:
        raise ValueError(
            f"multi-hot widths differ: queries have {q.values.shape[1]} classes, the database {db.values.shape[1]}; "
            "both need the same C"
        )
    return q, db


def relevance(I: np.ndarray, query: Labels, database: Labels) -> np.ndarray:
    """``rel [nq, R]`` bool: database item ``I[i, k]`` shares a label with query i (id -1: False)."""
    I = np.asarray(I, dtype=np.int64)
    valid = I >= 0
    ids = np.where(valid, I, 0)
    if query.kind == "single":
        return valid & (database.values[ids] == query.values[:, None])
    nq, R = I.shape
    C = query.values.shape[1]
    rows = max(1, _BLOCK_BYTES // max(1, R * C))
    out = np.empty((nq, R), dtype=bool)
    for q0 in range(0, nq, rows):
        q1 = min(nq, q0 + rows)
        out[q0:q1] = (database.values[ids[q0:q1]] & query.values[q0:q1, None, :]).any(axis=2)
    return out & valid


def relevant_counts(query: Labels, database: Labels) -> np.ndarray:
    """``[nq]`` int64: database items relevant to each query (the recall denominator)."""
    if query.kind == "single":
        values, counts = np.unique(database.values, return_counts=True)
        where = np.clip(np.searchsorted(values, query.values), 0, len(values) - 1)
        return np.where(values[where] == query.values, counts[where], 0).astype(np.int64)
    q = query.values.astype(np.float32)
    nq, n = len(query), len(database)
    rows = max(1, _BLOCK_BYTES // (4 * max(1, nq)))
    out = np.zeros(nq, dtype=np.int64)
    for i0 in range(0, n, rows):
        shared = q @ database.values[i0 : i0 + rows].T.astype(np.float32)  # exact: small integer counts
        out += (shared > 0).sum(axis=1)
    return out


def random_ranking_map(relevant: np.ndarray, n_database: int, R: int) -> float:
    """Expected mAP@R of a uniformly random ranking of the database (exact), the chance level.

    With r items of n relevant to a query, the hits h in a random top R are hypergeometric and,
    given h, their ranks are a uniform h-subset of 1..R, so E[AP@R | h] = (H_R + (h - 1)(R - H_R)
    / (R - 1)) / R with H_R = 1 + 1/2 + ... + 1/R (1 for R = 1). AP@R divides by the hits inside
    the top R, so when few items are relevant this is about the class prior r/n times H_R, not r/n.

    Args:
        relevant: ``[nq]`` relevant items in the database per query.
        n_database: database rows; R: the cut-off (<= n_database).

    Returns:
        the mean over queries of E[AP@R].
    """
    relevant = np.asarray(relevant, dtype=np.int64)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n_database + 1, dtype=np.float64)))])

    def log_choose(a, b):
        return log_factorial[a] - log_factorial[b] - log_factorial[a - b]

    harmonic = float(np.sum(1.0 / np.arange(1, R + 1)))
    hits = np.arange(1, R + 1)
    given_hits = np.ones(1) if R == 1 else (harmonic + (hits - 1) * (R - harmonic) / (R - 1)) / R
    total = 0.0
    values, counts = np.unique(relevant, return_counts=True)
    for r, count in zip(values, counts):
        h = hits[(hits <= r) & (R - hits <= n_database - r)]
        if len(h):
            pmf = np.exp(log_choose(r, h) + log_choose(n_database - r, R - h) - log_choose(n_database, R))
            total += count * float(pmf @ given_hits[h - 1])
    return total / max(1, len(relevant))


def tie_aware_precision_sums(rel: np.ndarray, D: np.ndarray | None) -> np.ndarray:
    """Per query, sum of precision@k over the relevant ranks, averaged over tie orders.

    Args:
        rel: ``[nq, R]`` bool relevance in rank order.
        D: ``[nq, R]`` scores in the same order, non-increasing along each row; None: no ties.

    Returns:
        ``[nq]`` float64 (divide by the relevant count in the top R to get AP@R).
    """
    rel = np.asarray(rel, dtype=np.float64)
    nq, R = rel.shape
    rank = np.arange(1, R + 1, dtype=np.float64)
    cum = np.cumsum(rel, axis=1)
    if D is None:
        return (rel * cum / rank).sum(axis=1)
    starts = np.ones((nq, R), dtype=bool)
    starts[:, 1:] = D[:, 1:] != D[:, :-1]
    pos = np.arange(R)
    start = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # 0-based start of each item's group
    key = (np.arange(nq)[:, None] * R + start).ravel()  # one key per group
    n = np.bincount(key, minlength=nq * R)[key].reshape(nq, R).astype(np.float64)
    r = np.bincount(key, weights=rel.ravel(), minlength=nq * R)[key].reshape(nq, R)
    before = np.take_along_axis(cum - rel, start, axis=1)  # relevant items before the group
    j = pos - start  # 0-based position inside the group
    inside = np.divide(j * (r - 1), n - 1, out=np.zeros_like(n), where=n > 1)
    return (r / n * (before + 1 + inside) / rank).sum(axis=1)


def per_query_metrics(
    I: np.ndarray,
    query: Labels,
    database: Labels,
    *,
    D: np.ndarray | None = None,
    R: int | None = None,
    database_relevant: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """AP@R, precision@R and recall@R of each query (definitions in the module docstring).

    Args:
        I: ``[nq, W]`` int64 database ids, best first (W >= R; id -1 = no result).
        query, database: :class:`Labels` from :func:`prepare_labels`.
        D: ``[nq, W]`` scores for tie handling (rows are first sorted by descending score,
            stably); None: the order of I is taken as strict.
        R: cut-off, default W.
        database_relevant: ``[nq]`` relevant counts in the database (default: computed).

    Returns:
        ``{"ap", "precision", "recall", "relevant_in_top"}``, each ``[nq]``.
    """
    I = np.asarray(I)
    width = I.shape[1]
    R = width if R is None else R
    if R > width or R < 1:
        raise ValueError(f"R = {R} needs neighbour lists of at least R entries and R >= 1; the lists have {width}")
    if len(I) != len(query):
        raise ValueError(f"{len(I)} neighbour lists for {len(query)} query labels; give one list per query")
    if D is not None:
        D = np.asarray(D, dtype=np.float64)
        if D.shape != I.shape:
            raise ValueError(f"scores D {D.shape} and ids I {I.shape} must have the same shape")
        order = np.argsort(-D, axis=1, kind="stable")
        I = np.take_along_axis(I, order, axis=1)[:, :R]
        D = np.take_along_axis(D, order, axis=1)[:, :R]
    else:
        I = I[:, :R]
    rel = relevance(I, query, database)
    hits = rel.sum(axis=1)
    sums = tie_aware_precision_sums(rel, D)
    total = relevant_counts(query, database) if database_relevant is None else np.asarray(database_relevant)
    return {
        "ap": np.divide(sums, hits, out=np.zeros(len(I)), where=hits > 0),
        "precision": hits / R,
        "recall": np.divide(hits, total, out=np.zeros(len(I)), where=total > 0),
        "relevant_in_top": hits,
    }


def retrieval_metrics(
    I: np.ndarray,
    query_labels,
    database_labels,
    *,
    D: np.ndarray | None = None,
    R: int | None = None,
    database_relevant: np.ndarray | None = None,
) -> dict[str, float]:
    """mAP@R, precision@R and recall@R averaged over queries (see the module docstring).

    Args:
        I: ``[nq, W]`` neighbour ids, best first; W >= R.
        query_labels, database_labels: labels ``[n]``, multi-hot ``[n, C]``, list of label lists,
            or :class:`Labels` (from :func:`prepare_labels`).
        D: ``[nq, W]`` scores; with them, equal scores are handled tie-aware.
        R: cut-off (default W).
        database_relevant: ``[nq]`` relevant counts in the whole database (computed if None).

    Returns:
        ``{"map", "precision", "recall"}`` (floats in [0, 1]) and ``"queries_without_relevant"``
        (queries with no relevant item in the database; they score 0 on all three).
    """
    query, database = prepare_labels(query_labels, database_labels, len(I), len(database_labels))
    if database_relevant is None:
        database_relevant = relevant_counts(query, database)
    per = per_query_metrics(I, query, database, D=D, R=R, database_relevant=database_relevant)
    without = int((np.asarray(database_relevant) == 0).sum())
    if without:
        logger.warning("%d of %d queries have no relevant item in the database; they score 0", without, len(I))
    return {**mean_metrics(per), "queries_without_relevant": without}


def mean_metrics(per: dict[str, np.ndarray]) -> dict[str, float]:
    """``{"map", "precision", "recall"}``: the means over queries of :func:`per_query_metrics`."""
    return {"map": float(per["ap"].mean()), "precision": float(per["precision"].mean()),
            "recall": float(per["recall"].mean())}
