"""The settings of :func:`retrieval.run_benchmark`, grouped by what they govern.

Each group is a small frozen dataclass with defaults, checked when it is made: a bad value is a
ValueError naming the field and what it accepts, before any array is read. Checks that need the
arrays (a funnel length within the code length, R within the database) run in ``run_benchmark``.

- :class:`SearchSettings`: which index, engine and device search each length, with how much memory;
- :class:`TimingSettings`: how searches are timed on a shared machine;
- :class:`FunnelSettings`: the adaptive funnel (shortlist with a short prefix, rerank with a longer one);
- :class:`BaselineSettings`: random m-subsets and PCA to m, and at which lengths and queries they run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from .arrays import DEFAULT_MEMORY_BUDGET_BYTES
from .backend import BACKENDS
from .baselines import DEFAULT_PCA_FIT_ROWS
from .checks import check_non_negative_int, check_positive_int
from .index import INDEX_KINDS, INDEX_OPTIONS

# by default the whole benchmark's planned work (scored round, timed rounds, funnel, baselines) stays
# within this multiple of a plain sweep's (every query searched once at every length, each index
# built once); the baselines take what the sweep leaves of it. Below 3 because the cost model is
# rough: at 200,000 x 2,048 on a 2-core machine a plan of 2.37x took 2.0-2.2x the plain sweep's wall
# time (docs/benchmarks.md); the margin is for machines where it errs the other way
DEFAULT_COST_RATIO = 2.5
# the timed rounds search a seeded sample of this many queries by default: one batch of 1,000
# keeps FAISS on its BLAS path at full width (it takes BLAS from 20 queries) and takes seconds at
# the full length of a million-row database, where timing every query in every round would
# multiply the sweep's cost by 1 + repeats
DEFAULT_TIMING_QUERIES = 1_000
# queries the baselines are scored on by default (a seeded sample): the standard error of a mAP
# over 1,000 queries is about 0.01, below the gaps between prefix, random subset and PCA that matter
DEFAULT_BASELINE_QUERIES = 1_000
# each timed search of one length in one round runs back to back for at least this long: a search
# of a small database takes milliseconds, and at ~0.1 s one scheduler hiccup on a shared machine
# moved q/s by several percent (the demo's rounds); half a second per measurement keeps the
# per-round ratios within a few percent there and costs nothing on a large database, whose single
# search already takes longer
DEFAULT_MIN_SECONDS = 0.5


def _check_optional_positive(value, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


@dataclass(frozen=True)
class SearchSettings:
    """How each code length is indexed and searched.

    Attributes:
        index: "flat" (exact), "ivf" or "hnsw" (approximate).
        backend: "auto", "faiss-cpu", "faiss-gpu" or "torch" (see :func:`~retrieval.backend.resolve_backend`).
        device: torch device for the torch backend ("cpu", "cuda", "cuda:1").
        memory_budget_bytes: bytes of database-sized buffers held at once: the indexes kept
            between timed rounds, the chunk being read, a streamed index's chunk. Peak anonymous
            memory stays within it plus a fixed overhead (the libraries, the queries, small
            working chunks; see :func:`~retrieval.benchmark.run_benchmark`).
        index_options: more :func:`~retrieval.index.build_index` options (nlist, nprobe, hnsw_m,
            ef_construction, ef_search, torch_dtype).
    """

    index: str = "flat"
    backend: str = "auto"
    device: str | None = None
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    index_options: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}; got {self.index!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        budget = self.memory_budget_bytes
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"memory_budget_bytes must be a positive integer (bytes); got {budget!r}")
        if not isinstance(self.index_options, Mapping):
            raise ValueError(f"index_options must be a dict of build_index options; got {self.index_options!r}")
        unknown = sorted(set(self.index_options) - set(INDEX_OPTIONS))
        if unknown:
            raise ValueError(f"unknown index_options {', '.join(unknown)}; accepted: {', '.join(INDEX_OPTIONS)}")
        if "seed" in self.index_options:
            raise ValueError("index_options may not hold 'seed': run_benchmark's seed seeds the IVF training")


@dataclass(frozen=True)
class TimingSettings:
    """How searches are timed (see :func:`~retrieval.timing.time_interleaved`).

    Attributes:
        repeats: timed rounds after one warm-up round (whose results, on every query, are the ones scored).
        query_sample: the timed rounds search a seeded sample of this many queries in one batch
            (None, or at least as many as there are: every query); queries/s is over the sample.
        busy_retries: a timed search during which other processes took over 10% of the CPU is
            repeated up to this many times, keeping the fastest (for shared machines).
        quiet_wait_seconds: before each timed search, wait up to this long for other processes
            to leave the CPU (0: no wait).
        min_seconds: each timed measurement (one length in one round) repeats the search back to
            back for at least this long and keeps the seconds of one search (0: one search).
    """

    repeats: int = 3
    query_sample: int | None = DEFAULT_TIMING_QUERIES
    busy_retries: int = 0
    quiet_wait_seconds: float = 0.0
    min_seconds: float = DEFAULT_MIN_SECONDS

    def __post_init__(self):
        check_positive_int(self.repeats, "repeats")
        _check_optional_positive(self.query_sample, "timing query_sample")
        check_non_negative_int(self.busy_retries, "busy_retries")
        for name in ("quiet_wait_seconds", "min_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be >= 0 (seconds); got {value!r}")

    def as_dict(self) -> dict:
        """The keyword arguments of :func:`~retrieval.timing.time_interleaved` (the sample is not one)."""
        return {"repeats": self.repeats, "busy_retries": self.busy_retries,
                "quiet_wait_seconds": float(self.quiet_wait_seconds), "min_seconds": float(self.min_seconds)}


@dataclass(frozen=True)
class FunnelSettings:
    """The adaptive funnel (see :class:`~retrieval.funnel.Funnel`); None leaves a default.

    Attributes:
        short_dim: shortlist prefix length (default: 1/16 of the code length).
        rerank_dim: rerank prefix length (default: the full length), longer than short_dim.
        shortlist_size: candidates kept per query (default 2 R).
    """

    short_dim: int | None = None
    rerank_dim: int | None = None
    shortlist_size: int | None = None

    def __post_init__(self):
        _check_optional_positive(self.short_dim, "funnel short_dim")
        _check_optional_positive(self.rerank_dim, "funnel rerank_dim")
        _check_optional_positive(self.shortlist_size, "shortlist_size")


@dataclass(frozen=True)
class BaselineSettings:
    """Random m-subsets of the dimensions and PCA to m, searched like the prefixes.

    Attributes:
        random_draws: seeded random subsets per length.
        pca_fit_rows: rows the PCA is fitted on (a seeded sample; None: all rows).
        dims: the lengths the baselines run at: "auto" (default) takes the benchmark's lengths
            from the shortest up while the whole benchmark's estimated work stays within
            ``cost_ratio`` times a plain sweep's; "all": every benchmarked length; or a list of
            benchmarked lengths.
        query_sample: the baselines are scored on a seeded sample of this many queries (the
            prefix is scored on the same sample beside them); None: on every query.
        cost_ratio: the bound of "auto": the whole benchmark's planned work (scored round, timed
            rounds, funnel, baselines) over a plain sweep's (every query searched once at every
            length, each index built once), both estimated by :mod:`retrieval.plan`.
    """

    random_draws: int = 5
    pca_fit_rows: int | None = DEFAULT_PCA_FIT_ROWS
    dims: str | Sequence[int] = "auto"
    query_sample: int | None = DEFAULT_BASELINE_QUERIES
    cost_ratio: float = DEFAULT_COST_RATIO

    def __post_init__(self):
        check_positive_int(self.random_draws, "random_draws")
        _check_optional_positive(self.pca_fit_rows, "pca_fit_rows")
        _check_optional_positive(self.query_sample, "baseline query_sample")
        if isinstance(self.dims, str):
            if self.dims not in ("auto", "all"):
                raise ValueError(f"baseline dims must be 'auto', 'all' or a list of code lengths; got {self.dims!r}")
        elif not isinstance(self.dims, Sequence) or not self.dims:
            raise ValueError(f"baseline dims must be 'auto', 'all' or a non-empty list of code lengths; got {self.dims!r}")
        if isinstance(self.cost_ratio, bool) or not isinstance(self.cost_ratio, (int, float)) or not self.cost_ratio > 0:
            raise ValueError(f"baseline cost_ratio must be a number > 0; got {self.cost_ratio!r}")


def settings_dict(settings) -> dict | None:
    """A settings object as a JSON-serialisable dict (None stays None)."""
    if settings is None:
        return None
    out = asdict(settings)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    if "index_options" in out:
        out["index_options"] = {k: str(v) if k == "torch_dtype" else v for k, v in out["index_options"].items()}
    return out


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"4GiB"``, ``"512MiB"``, ``"2.5G"``, ``"1000000"`` -> bytes (binary units with i, decimal without).

    Raises:
        ValueError: not a positive size with one of the units B, K(i)B, M(i)B, G(i)B, T(i)B.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"a memory size is a number with an optional unit (B, KiB, MiB, GiB, TiB, or KB, MB, GB, "
                         f"TB), e.g. 4GiB or 512MiB; got {text!r}")
    unit = (match.group(2) or "").lower().rstrip("b")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ValueError(f"a memory size must be at least 1 byte; got {text!r}")
    return value
