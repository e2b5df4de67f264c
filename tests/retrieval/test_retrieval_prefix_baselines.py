"""Prefix truncation, random subsets and PCA: definitions checked on small arrays and memmaps."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.arrays import materialize
from retrieval.baselines import fit_pca, pca_view, random_subset, subset_view
from retrieval.prefix import default_lengths, prefix_codes, prefix_view, resolve_lengths


def test_default_lengths_are_powers_of_two_from_four_as_the_official_code_scores_them_and_the_full_length():
    assert default_lengths(2048) == [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert default_lengths(100) == [4, 8, 16, 32, 64, 100]
    assert default_lengths(64) == [4, 8, 16, 32, 64]
    assert default_lengths(4) == [4] and default_lengths(3) == [3] and default_lengths(1) == [1]
    assert resolve_lengths([1, 2], 64) == [1, 2]  # shorter lengths when asked
    assert resolve_lengths([64, 8, 8], 64) == [8, 64]


@pytest.mark.parametrize("dims, match", [([0], r"code length 0 is outside \[1, 64\]"),
                                         ([65], r"code length 65 is outside \[1, 64\]"),
                                         ([2.5], "code lengths must be integers"),
                                         ([], "dims is empty")])
def test_bad_lengths_are_named(dims, match):
    with pytest.raises(ValueError, match=match):
        resolve_lengths(dims, 64)


def test_prefix_is_the_first_m_dimensions_normalised_and_cosine_is_the_inner_product():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 16))
    x[3, :4] = 0  # a zero prefix stays zero
    p = prefix_codes(x, 4)
    assert p.dtype == np.float32 and p.flags.c_contiguous and p.shape == (50, 4)
    norms = np.linalg.norm(p, axis=1)
    assert norms[3] == 0 and np.allclose(np.delete(norms, 3), 1, atol=1e-6)
    a, b = x[0, :4], x[1, :4]
    assert p[0] @ p[1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5)
    view = prefix_view(x, 4)
    assert view.shape == (50, 4) and np.array_equal(view[10:20], p[10:20])
    assert np.array_equal(view.take(np.array([[7, 2], [2, 7]])), p[[[7, 2], [2, 7]]])


def test_random_subsets_are_seeded_sorted_and_distinct_per_draw():
    a = random_subset(64, 8, draw=0, seed=1)
    assert np.array_equal(a, random_subset(64, 8, draw=0, seed=1))
    assert np.array_equal(a, np.sort(a)) and len(set(a)) == 8 and a.max() < 64
    assert not np.array_equal(a, random_subset(64, 8, draw=1, seed=1))
    x = np.random.default_rng(0).standard_normal((10, 64))
    rows = subset_view(x, a)[0:10]
    assert np.allclose(rows, x[:, a] / np.linalg.norm(x[:, a], axis=1, keepdims=True), atol=1e-6)


def test_pca_matches_numpy_svd_and_reads_a_memmap_in_chunks(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1]) + 7).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    pca = fit_pca(mm, max_rows=None, memory_budget_bytes=16 * 6 * 50)  # eight chunks of 50 rows
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(pca.variances, s**2 / 399, rtol=1e-5)
    np.testing.assert_allclose(np.abs(pca.components.T @ vt.T), np.eye(6), atol=1e-4)  # same axes, up to sign
    projected = materialize(pca_view(mm, pca, 2), chunk_rows=64)
    expected = centred[:, :] @ vt[:2].T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(projected), np.abs(expected), atol=1e-4)
    sampled = fit_pca(x, max_rows=200, seed=3)
    assert sampled.fit_rows == 200
