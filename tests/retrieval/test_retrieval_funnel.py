"""The adaptive funnel: exact when the shortlist is the whole database, the same on both rerank
paths, reporting its settings, and refusing settings that make no sense."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.funnel import Funnel, default_short_dim, rerank
from retrieval.index import build_index
from retrieval.prefix import prefix_codes, prefix_view


def _codes(n=1500, nq=25, k=64, seed=0):
    rng = np.random.default_rng(seed)
    scale = (np.arange(k) + 1.0) ** -0.5
    return ((rng.standard_normal((n, k)) * scale).astype(np.float32),
            (rng.standard_normal((nq, k)) * scale).astype(np.float32))


def test_a_shortlist_of_the_whole_database_gives_the_full_length_result():
    db, q = _codes()
    funnel = Funnel(db, short_dim=4, shortlist_size=len(db), backend="faiss-cpu")
    D, I = funnel.search(q, 10)
    D_ref, I_ref = build_index(prefix_codes(db, 64), backend="faiss-cpu").search(prefix_codes(q, 64), 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-6)
    assert set(funnel.last_seconds) == {"shortlist", "rerank"}
    info = funnel.info(10)
    assert info["short_dim"] == 4 and info["rerank_dim"] == 64 and info["shortlist_size"] == len(db)
    assert info["shortlist"]["backend"] == "faiss-cpu" and info["rerank_device"] == "cpu"


def test_default_funnel_is_one_sixteenth_then_full_length_with_two_R_candidates():
    db, q = _codes()
    funnel = Funnel(db, backend="faiss-cpu")
    assert funnel.short_dim == default_short_dim(64) == 4 and funnel.rerank_dim == 64
    assert funnel.info(10)["shortlist_size"] == 20
    D, I = funnel.search(q, 10)
    assert I.shape == (25, 10) and np.all(np.diff(D, axis=1) <= 0)


def test_rerank_paths_agree_in_memory_lazily_and_on_torch():
    db, q = _codes(seed=1)
    full, qf = prefix_codes(db, 64), prefix_codes(q, 64)
    candidates = np.random.default_rng(0).integers(0, len(db), (25, 50))
    candidates[0, :5] = -1  # no candidate: never returned
    D1, I1 = rerank(qf, full, candidates, 10)
    D2, I2 = rerank(qf, prefix_view(db, 64), candidates, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-5)
    assert (I1 >= 0).all()
    torch_funnel = Funnel(db, short_dim=8, backend="torch", device="cpu")
    faiss_funnel = Funnel(db, short_dim=8, backend="faiss-cpu")
    Dt, It = torch_funnel.search(q, 10)
    Df, If = faiss_funnel.search(q, 10)
    np.testing.assert_array_equal(It, If)
    np.testing.assert_allclose(Dt, Df, rtol=1e-5, atol=1e-6)
    assert torch_funnel.info(10)["rerank_device"] == "cpu" and torch_funnel.info(10)["shortlist"]["backend"] == "torch"


def test_bad_funnel_settings_are_named():
    db, q = _codes(n=200)
    with pytest.raises(ValueError, match=r"rerank_dim \(8\) must be longer than short_dim \(8\)"):
        Funnel(db, short_dim=8, rerank_dim=8)
    with pytest.raises(ValueError, match=r"code length 100 is outside \[1, 64\]"):
        Funnel(db, short_dim=100)
    with pytest.raises(ValueError, match="shortlist_size = 5 is smaller than R = 10"):
        Funnel(db, short_dim=8, shortlist_size=5).search(q, 10)
