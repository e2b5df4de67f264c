"""Exact inner-product search in torch: chunked matrix product + two-level top-k.

The path used where FAISS has no GPU but torch has CUDA; it runs on the CPU too (tests). On a
GPU the database is stored in float16 (half the memory and bandwidth of float32; scores then
carry float16 rounding, about 1e-3 relative).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .arrays import read_rows, rows_for_budget, row_chunks, sort_neighbours, work_rows
from .topk import merge_topk, topk_rows

logger = logging.getLogger(__name__)

# queries scored at once: large enough to keep a GPU busy, small enough for the score block
QUERY_BATCH = 4096


def _block_to_device(block, row0: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(device, dtype)
    if not torch.isfinite(t).all():
        raise ValueError(
            f"database rows {row0}..{row0 + len(block) - 1} overflow {dtype}; "
            "use dtype=torch.float32 or codes within the float16 range (|x| < 65504)"
        )
    return t


def to_device(database, device, dtype: torch.dtype) -> torch.Tensor:
    """``database [n, d]`` (array-like, read a working chunk at a time) as one tensor on ``device``.

    Raises:
        ValueError: a value overflows ``dtype`` (float16 holds |x| < 65504).
    """
    n, d = (int(s) for s in database.shape)
    out = torch.empty((n, d), device=device, dtype=dtype)
    source_width = database.source.shape[1] if hasattr(database, "source") else d
    for i0, i1 in row_chunks(n, work_rows(source_width)):
        out[i0:i1] = _block_to_device(database[i0:i1], i0, out.device, dtype)
    return out


class TorchFlatIndex:
    """Exact maximum-inner-product search over ``database [n, d]`` with torch.

    The database is copied to ``device`` once when it fits half the memory budget (resident);
    otherwise it is read from ``database`` chunk by chunk at every search (streamed), so it never
    has to fit in memory. Either way scores are computed for one chunk of rows at a time and a
    running top-R is kept.

    Args:
        database: array-like ``[n, d]`` sliceable by rows (np.ndarray, np.memmap, RowView).
        device: torch device ("cpu", "cuda", "cuda:1").
        dtype: storage and matmul dtype; default float16 on CUDA, float32 on the CPU.
        memory_budget_bytes: bytes for the database rows and score block held at once.
    """

    def __init__(self, database, *, device="cpu", dtype=None, memory_budget_bytes=None):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.database = database
        self.ntotal, self.dim = (int(s) for s in database.shape)
        self._itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.budget = rows_for_budget(memory_budget_bytes, 1)  # validated budget in bytes
        self.resident = self.ntotal * self.dim * self._itemsize <= self.budget // 2
        self.stored = to_device(database, self.device, self.dtype) if self.resident else None
        logger.info("torch flat index: %d x %d %s on %s, %s", self.ntotal, self.dim, self.dtype, self.device,
                    "resident" if self.resident else "streamed")

    def chunk_rows(self, nq: int) -> int:
        """Database rows scored at once for ``nq`` queries: the score block (and, when streamed,
        the chunk read and its device copy) within the budget."""
        score_row = min(nq, QUERY_BATCH) * self._itemsize
        if self.resident:
            return min(self.ntotal, rows_for_budget(self.budget // 2, score_row))
        return min(self.ntotal, rows_for_budget(self.budget, self.dim * (self._itemsize + 4) + score_row))

    def _chunks(self, rows: int):
        # streamed: one host buffer refilled a working chunk at a time (on the CPU the float32
        # tensor shares it), so a view's transform never holds a whole chunk's temporaries
        buffer = None if self.resident else np.empty((rows, self.dim), dtype=np.float32)
        for i0, i1 in row_chunks(self.ntotal, rows):
            if self.resident:
                yield i0, self.stored[i0:i1]
            else:
                yield i0, _block_to_device(read_rows(self.database, i0, i1, out=buffer), i0, self.device, self.dtype)

    @torch.inference_mode()
    def search(self, xq: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``R`` database rows by inner product for each query.

        Args:
            xq: ``[nq, d]`` float queries.
            R: neighbours per query, ``1 <= R <= ntotal``.

        Returns:
            D ``[nq, R]`` float32 scores and I ``[nq, R]`` int64 ids, unordered within a row (the
            common :meth:`~retrieval.index.SearchIndex.search` orders them once).
        """
        q_all = torch.from_numpy(np.ascontiguousarray(xq, dtype=np.float32)).to(self.device, self.dtype)
        nq = q_all.shape[0]
        best_v = torch.full((nq, 0), float("-inf"), device=self.device, dtype=self.dtype)
        best_i = torch.zeros((nq, 0), device=self.device, dtype=torch.int64)
        for row0, chunk in self._chunks(self.chunk_rows(nq)):
            vs, ids = [], []
            for q0, q1 in row_chunks(nq, QUERY_BATCH):
                v, i = topk_rows(q_all[q0:q1] @ chunk.T, R)
                vs.append(v)
                ids.append(i + row0)
            best_v, best_i = merge_topk(best_v, best_i, torch.cat(vs), torch.cat(ids), R)
        return best_v.float().cpu().numpy(), best_i.cpu().numpy()

    def info(self, nq: int = QUERY_BATCH) -> dict:
        """Index type, dtype, residency, and the chunking a search of ``nq`` queries uses (the
        chunk depends on the query count: ``chunk_queries`` says which count it is for)."""
        rows = self.chunk_rows(nq)
        return {
            "index": "torch exact (matmul + two-level top-k)",
            "dtype": str(self.dtype).replace("torch.", ""),
            "resident": self.resident,
            "chunk_queries": min(nq, QUERY_BATCH),
            "chunk_rows": rows,
            "num_chunks": -(-self.ntotal // rows),
        }


@torch.inference_mode()
def rerank_torch(queries: np.ndarray, database: torch.Tensor, candidates: np.ndarray,
                 R: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``R`` of each query's candidates by inner product, on ``database``'s device.

    Args:
        queries: ``[nq, d]`` float32 (prefixed, normalised).
        database: ``[n, d]`` tensor (resident on the device that reranks).
        candidates: ``[nq, L]`` int64 ids (-1 = none), ``L >= R``.
        R: results per query.

    Returns:
        D ``[nq, R]`` float32 and I ``[nq, R]`` int64, best first.
    """
    ids = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.int64)).to(database.device)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(database.device, database.dtype)
    nq, L = ids.shape
    batch = max(1, (256 << 20) // (L * database.shape[1] * database.element_size()))
    values, top = [], []
    for q0, q1 in row_chunks(nq, batch):
        cand = ids[q0:q1]
        rows = database[cand.clamp_min(0)]  # [b, L, d]
        scores = torch.bmm(rows, q[q0:q1, :, None])[:, :, 0].float().masked_fill(cand < 0, float("-inf"))
        v, where = torch.topk(scores, R, dim=1)
        values.append(v)
        top.append(cand.gather(1, where))
    return sort_neighbours(torch.cat(values).cpu().numpy(), torch.cat(top).cpu().numpy())
