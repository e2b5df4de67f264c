"""Indexes against brute force on small seeded data: FAISS flat, the torch exact path and its
two-level top-k, streamed (memmapped) databases over a memory budget, IVF and HNSW, backends."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from retrieval.arrays import l2_normalize
from retrieval.backend import faiss_num_gpus, resolve_backend
from retrieval.index import build_index, search
from retrieval.prefix import prefix_codes, prefix_view
from retrieval.topk import topk_rows


def _data(n=2000, nq=30, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


def _brute_force(xb, xq, R):
    scores = xq.astype(np.float64) @ xb.astype(np.float64).T
    I = np.argsort(-scores, axis=1, kind="stable")[:, :R]
    return np.take_along_axis(scores, I, axis=1), I


@pytest.mark.parametrize("backend", ["faiss-cpu", "torch"])
def test_flat_search_matches_brute_force(backend):
    xb, xq = _data()
    blas_threshold = faiss.cvar.distance_compute_blas_threshold
    D, I = build_index(xb, backend=backend, device="cpu" if backend == "torch" else None).search(xq, 10)
    assert faiss.cvar.distance_compute_blas_threshold == blas_threshold  # FAISS's setting restored
    D_ref, I_ref = _brute_force(xb, xq, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (30, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, k, block", [(1000, 10, None), (1003, 7, 16), (999, 50, 8), (64, 10, None), (500, 1, 3)])
def test_two_level_topk_is_exact(n, k, block):
    gen = torch.Generator().manual_seed(n + k)
    scores = torch.randn(20, n, generator=gen)
    values, ids = topk_rows(scores, k, block)
    ref_values, ref_ids = torch.topk(scores, k, dim=1)
    assert torch.equal(values, ref_values) and torch.equal(ids, ref_ids)
    # with many equal scores the values are still exact and every id carries its own score
    tied = (scores * 2).round() / 2
    values, ids = topk_rows(tied, k, block)
    assert torch.equal(values, torch.topk(tied, k, dim=1).values)
    assert torch.equal(tied.gather(1, ids), values) and all(len(set(r.tolist())) == k for r in ids)


def test_torch_and_faiss_give_the_same_lists_with_a_small_chunk():
    xb, xq = _data(n=3000, d=24, seed=1)
    budget = 3000 * 24 * 4 // 3  # under the database size: the torch path streams chunks
    torch_index = build_index(xb, backend="torch", device="cpu", memory_budget_bytes=budget)
    assert not torch_index.info()["resident"] and torch_index.info()["num_chunks"] > 1
    D_t, I_t = torch_index.search(xq, 20)
    D_f, I_f = build_index(xb, backend="faiss-cpu").search(xq, 20)
    np.testing.assert_array_equal(I_t, I_f)
    np.testing.assert_allclose(D_t, D_f, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["faiss-cpu", "torch"])
def test_memmapped_database_over_the_budget_gives_the_in_memory_result(tmp_path, backend):
    codes, queries = _data(n=5000, nq=40, d=48, seed=2)
    mm = np.lib.format.open_memmap(tmp_path / "codes.npy", mode="w+", dtype=np.float32, shape=codes.shape)
    mm[:] = codes
    mm.flush()
    mm = np.load(tmp_path / "codes.npy", mmap_mode="r")
    budget = 100_000  # bytes: the 16-dimension prefix alone is 320,000 bytes
    device = "cpu" if backend == "torch" else None
    streamed = build_index(prefix_view(mm, 16), backend=backend, device=device, memory_budget_bytes=budget)
    info = streamed.info()
    assert info["num_chunks"] >= 4 and info["backend"] == backend and info["device"] == "cpu"
    assert info["rows"] == "prefix 16 of 48, L2-normalised"
    assert info.get("in_memory", info.get("resident")) is False
    in_memory = build_index(prefix_codes(codes, 16), backend=backend, device=device)
    q = prefix_codes(queries, 16)
    D_s, I_s = streamed.search(q, 25)
    D_m, I_m = in_memory.search(q, 25)
    np.testing.assert_array_equal(I_s, I_m)
    np.testing.assert_allclose(D_s, D_m, rtol=1e-6, atol=1e-6)


def test_ivf_probing_every_list_is_exact_and_reports_its_parameters():
    xb, xq = _data(n=3000, d=16, seed=3)
    xb, xq = l2_normalize(xb), l2_normalize(xq)
    ivf = build_index(xb, index="ivf", backend="faiss-cpu", nlist=20, nprobe=20)
    D, I = ivf.search(xq, 10)
    D_ref, I_ref = build_index(xb, backend="faiss-cpu").search(xq, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5)
    info = ivf.info()
    assert info["index"] == "IndexIVFFlat" and info["nlist"] == 20 and info["nprobe"] == 20
    assert build_index(xb, index="ivf", backend="faiss-cpu").info()["nlist"] == round(3000 ** 0.5)


def test_hnsw_finds_most_true_neighbours_and_runs_on_the_cpu():
    xb, xq = _data(n=2000, d=16, seed=4)
    xb, xq = l2_normalize(xb), l2_normalize(xq)
    hnsw = build_index(xb, index="hnsw", backend="torch", device="cpu")
    _, I = hnsw.search(xq, 10)
    _, I_ref = _brute_force(xb, xq, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref)])
    assert recall > 0.9
    assert hnsw.info()["backend"] == "faiss-cpu" and hnsw.info()["index"] == "IndexHNSWFlat"


def test_search_checks_its_inputs_and_reports_the_backend():
    xb, xq = _data(n=200, d=8)
    D, I, info = search(xq, xb, 5)
    assert I.shape == (30, 5) and info["backend"] in ("faiss-cpu", "faiss-gpu", "torch") and "device" in info
    with pytest.raises(ValueError, match="R = 201 is larger than the database"):
        search(xq, xb, 201)
    with pytest.raises(ValueError, match="queries have 7 dimensions but the database has 8"):
        search(xq[:, :7], xb, 5)
    with pytest.raises(ValueError, match="index must be one of flat, ivf, hnsw"):
        search(xq, xb, 5, index="lsh")
    with pytest.raises(ValueError, match=r"queries must be \[nq, 8\]"):
        build_index(xb).search(xq[:, :4], 5)


@pytest.mark.skipif(faiss_num_gpus() > 0 or torch.cuda.is_available(), reason="a GPU is visible")
def test_backend_choice_without_a_gpu():
    assert resolve_backend("auto").as_dict() == {"name": "faiss-cpu", "device": "cpu", "num_gpus": 0}
    assert resolve_backend("torch").device == "cpu"
    with pytest.raises(ValueError, match="needs a GPU build of FAISS"):
        resolve_backend("faiss-gpu")
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_backend("torch", "cuda")


def test_unknown_backend_and_device_misuse_are_named():
    with pytest.raises(ValueError, match="backend must be one of auto, faiss-cpu, faiss-gpu, torch"):
        resolve_backend("cuvs")
    with pytest.raises(ValueError, match="applies to the torch backend only"):
        resolve_backend("faiss-cpu", "cpu")


def test_an_in_memory_cpu_index_holds_no_second_copy_and_a_streamed_one_one_chunk():
    xb, xq = _data(n=1000, d=16)
    index = build_index(xb, backend="faiss-cpu")
    assert np.shares_memory(index.stored_rows(), xb)  # the array searched as it is
    built = build_index(prefix_view(xb, 16), backend="faiss-cpu")
    assert built.stored_rows().shape == (1000, 16) and not np.shares_memory(built.stored_rows(), xb)
    # streamed: the chunk read is the only buffer of the budget's size (no index copy beside it)
    streamed = build_index(prefix_view(xb, 16), backend="faiss-cpu", memory_budget_bytes=16 * 4 * 100)
    assert streamed.info()["in_memory"] is False and streamed.info()["chunk_rows"] == 100
    assert streamed.stored_rows() is None
    np.testing.assert_array_equal(streamed.search(prefix_codes(xq, 16), 5)[1], built.search(prefix_codes(xq, 16), 5)[1])


@pytest.mark.parametrize("backend", ["faiss-cpu", "torch"])
def test_a_streamed_search_over_a_pca_view_holds_one_chunk_not_the_views_temporaries(backend, monkeypatch):
    # the PCA view's transform centres full-width rows before projecting them: over a whole
    # chunk at once (and with the previous chunk still referenced) that held about four chunks
    import tracemalloc

    import retrieval.arrays
    from retrieval.baselines import fit_pca, pca_view

    monkeypatch.setattr(retrieval.arrays, "WORK_CHUNK_BYTES", 256 << 10)  # working chunks of 256 rows here
    xb, xq = _data(n=20_000, d=256)
    pca = fit_pca(xb, max_rows=None)
    view, budget = pca_view(xb, pca, 128), 2 << 20
    streamed = build_index(view, backend=backend, memory_budget_bytes=budget)
    exact = build_index(view, backend=backend)
    assert streamed.info()["in_memory" if backend == "faiss-cpu" else "resident"] is False
    q = pca_view(xq, pca, 128)[0 : len(xq)]
    tracemalloc.start()
    try:
        D, I = streamed.search(q, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= budget + (1 << 20), f"peak {peak / 2**20:.1f} MiB of numpy buffers for a 2 MiB budget"
    D_exact, I_exact = exact.search(q, 10)
    np.testing.assert_array_equal(I, I_exact)
    np.testing.assert_allclose(D, D_exact, rtol=1e-5, atol=1e-6)
