"""Adaptive-length retrieval benchmarks on arrays (FAISS, or torch on a GPU).

Arrays in, metrics out; never imports ``eigenmap`` or the command-line layer. The command line calls
:func:`run_benchmark` then :func:`write_report`::

    results = retrieval.run_benchmark(database, database_labels, queries, query_labels)
    results = retrieval.run_benchmark(database, database_labels, queries, query_labels, dims=[64, 2048],
                                      search=retrieval.SearchSettings(memory_budget_bytes=8 << 30),
                                      baselines=None)

Settings come in groups (:mod:`retrieval.settings`): :class:`SearchSettings`,
:class:`TimingSettings`, :class:`FunnelSettings`, :class:`BaselineSettings`. The pieces are
public for other uses:

- :mod:`retrieval.prefix`: a code of length m = first m dimensions, L2-normalised;
- :mod:`retrieval.index`: exact (flat, chunked for large databases) and IVF / HNSW search;
- :mod:`retrieval.metrics`: mAP@R, precision@R, recall@R, single- and multi-label, tie-aware;
- :mod:`retrieval.baselines`: random m-subsets of dimensions, PCA to m;
- :mod:`retrieval.funnel`: shortlist with a short prefix, rerank with a longer one;
- :mod:`retrieval.plan`: what a benchmark run will do within its memory budget, and its cost;
- :mod:`retrieval.report`: JSON, markdown table, PNG plots.
"""

from .backend import Backend, resolve_backend
from .baselines import fit_pca, pca_view, random_subset, subset_view
from .benchmark import run_benchmark
from .funnel import Funnel
from .index import build_index, search
from .metrics import prepare_labels, retrieval_metrics
from .prefix import default_lengths, prefix_codes, prefix_view
from .report import write_report
from .settings import BaselineSettings, FunnelSettings, SearchSettings, TimingSettings, parse_bytes

__all__ = [
    "Backend",
    "BaselineSettings",
    "Funnel",
    "FunnelSettings",
    "build_index",
    "default_lengths",
    "fit_pca",
    "pca_view",
    "prefix_codes",
    "prefix_view",
    "prepare_labels",
    "random_subset",
    "resolve_backend",
    "retrieval_metrics",
    "run_benchmark",
    "parse_bytes",
    "search",
    "SearchSettings",
    "subset_view",
    "TimingSettings",
    "write_report",
]
