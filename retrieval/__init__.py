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

import importlib

# name -> the module defining it, imported on first use: ``import retrieval.progress`` (the training
# worker's clock) must not load FAISS and the benchmark with the package
_EXPORTS = {
    "Backend": "backend", "resolve_backend": "backend",
    "fit_pca": "baselines", "pca_view": "baselines", "random_subset": "baselines", "subset_view": "baselines",
    "run_benchmark": "benchmark", "Funnel": "funnel", "build_index": "index", "search": "index",
    "prepare_labels": "metrics", "retrieval_metrics": "metrics",
    "default_lengths": "prefix", "prefix_codes": "prefix", "prefix_view": "prefix", "write_report": "report",
    "BaselineSettings": "settings", "FunnelSettings": "settings", "SearchSettings": "settings",
    "TimingSettings": "settings", "parse_bytes": "settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    try:  # a submodule (``retrieval.backend.BACKENDS``), as the eager imports made them attributes
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return __all__
