"""What :func:`retrieval.run_benchmark` will do, decided before any index is built, and what it
should cost.

- **Memory.** When every length's index fits the memory budget together (with what the funnel
  adds), the indexes are built once and held: each round searches every length in turn.
  Otherwise each length is built, searched and freed in every round, so the rounds stay
  interleaved and each length's speed-up is still paired per round with the reference length's
  (a flat index larger than the budget streams the database at each search).
- **Timed rounds.** Round 0 searches every query (its results are scored); the timed rounds
  search a seeded sample of them (``TimingSettings.query_sample``), so timing costs a fraction
  of the scoring on a large query set.
- **Baselines.** By default (``dims="auto"``) they run on a seeded sample of the queries, at the
  lengths, from the shortest up, while the whole benchmark's planned work stays within
  ``cost_ratio`` times a *plain sweep*'s (every query searched once at every length, each index
  built once: what a script calling FAISS per length does), or while the baselines stay within
  ``BASELINE_FLOOR_UNITS`` when that is more (small runs); the PCA is fitted on fewer rows when
  the bound asks for it (a quarter of the baselines' share at most).
- **Estimated time.** The planned work times a rate measured by a short probe search.

The cost model counts work in units of one multiply-add of a query with a database row in one
dimension inside an exact search. It is deterministic (the plan depends on the sizes and
settings, never on a timing); its constants were measured on a 2-core x86 machine with FAISS's
BLAS at 200,000 x 2,048 float32 (memory-mapped), where a unit took about 1.3e-11 s:

- exact search of q queries over n rows of m dimensions: ``q n (m + SELECT_DIMS)``, the top-R
  selection and the scores' passes taking about as long as SELECT_DIMS dimensions;
- filling an index of n rows of m dimensions (read, normalise, copy: memory-bound, about as
  long as a 1,000-query search): ``FILL_UNITS n m``, plus ``ROW_READ_UNITS n k`` when whole rows
  are read (a random subset's columns, a PCA projection);
- PCA projection of n rows to m dimensions: ``PROJECT_UNITS n k m`` plus its fill; the PCA fit
  on f rows: ``FLOAT64_FACTOR f k^2`` (the covariance is accumulated in float64), the rows'
  reads, and ``EIGH_UNITS k^3`` for the eigendecomposition;
- the funnel's rerank: ``RERANK_UNITS q L d`` for L candidates of d dimensions (rows gathered by id).

IVF and HNSW are costed as exact search over the rows they visit; their training is left out,
so their estimates are rough.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .arrays import l2_normalize, work_rows
from .funnel import DEFAULT_SHORTLIST_FACTOR

logger = logging.getLogger(__name__)

SELECT_DIMS = 128
FILL_UNITS = 1000
ROW_READ_UNITS = 30
PROJECT_UNITS = 1.0
FLOAT64_FACTOR = 2
EIGH_UNITS = 15
RERANK_UNITS = 50
# the baselines may always take this much planned work (under a minute at the 1.3e-11 s per
# unit of a 2-core machine), whatever the ratio: the bound is for large runs, not small ones
BASELINE_FLOOR_UNITS = 4e12
# the PCA fit's sample is not cut below this many rows per dimension for the cost bound
MIN_PCA_ROWS_PER_DIM = 10
# the probe search: at most this many queries against this many rows, at the full length
PROBE_QUERIES, PROBE_ROWS = 256, 20_000


def index_bytes(kind: str, n: int, m: int, options: dict) -> int:
    """Host bytes an index of ``n`` rows of ``m`` float32 dimensions holds (ids and graph links included)."""
    if kind == "ivf":
        return n * (4 * m + 8)
    if kind == "hnsw":
        return n * (4 * m + 8 * int(options.get("hnsw_m", 32)))
    return 4 * n * m


def search_units(kind: str, n: int, m: int, q: int, options: dict) -> float:
    """Planned work of searching ``q`` queries over ``n`` rows of ``m`` dimensions."""
    if kind == "ivf":
        nlist = options.get("nlist") or max(1, round(math.sqrt(n)))
        nprobe = min(nlist, options.get("nprobe") or max(1, nlist // 16))
        return q * (nlist * m + n * nprobe / nlist * (m + SELECT_DIMS))
    if kind == "hnsw":
        visited = 2 * int(options.get("hnsw_m", 32)) * int(options.get("ef_search", 128))
        return q * min(n, visited) * (m + SELECT_DIMS)
    return q * n * (m + SELECT_DIMS)


def build_units(n: int, m: int, k: int | None = None) -> float:
    """Planned work of filling an index of ``n`` rows of ``m`` dimensions; ``k``: whole rows of
    ``k`` dimensions are read for it (a random subset's columns, a PCA projection)."""
    return n * (FILL_UNITS * m + (ROW_READ_UNITS * k if k else 0))


def pca_fit_units(rows: int, k: int) -> float:
    return FLOAT64_FACTOR * rows * k * k + build_units(rows, k) + EIGH_UNITS * k**3


@dataclass
class Plan:
    """The work of one benchmark run (fields in the order it runs), with its planned units.

    Attributes:
        n, nq, k, R: database rows, queries, code length, neighbours.
        lengths: code lengths swept (the last is the reference of the speed-ups).
        rounds: 1 warm-up round (its results, on every query, are scored) + the timed rounds.
        timing_query_ids: sorted ids of the queries the timed rounds search (None: all).
        held: every length's index built once and held (else rebuilt in every round).
        held_bytes: what the held indexes take (0 when rebuilt).
        funnel: None or (short_dim, rerank_dim, shortlist_size).
        baseline_dims: lengths with baselines ([] without baselines).
        baseline_query_ids: sorted ids of the queries the baselines are scored on (None: all).
        pca: PCA runs at the baseline lengths (beside the random subsets).
        pca_fit_rows: rows the PCA is fitted on (0 without PCA).
        random_draws: random subsets per length.
        baseline_choice: how the baseline lengths, queries and PCA rows were chosen, in words.
        seconds_per_unit: the probe's rate (None when not probed).
        min_timed_seconds: each timed search runs back to back for at least this long
            (:class:`~retrieval.settings.TimingSettings` ``min_seconds``).
    """

    n: int
    nq: int
    k: int
    R: int
    kind: str
    options: dict
    lengths: list[int]
    rounds: int
    held: bool
    held_bytes: int
    budget: int
    funnel: tuple[int, int, int] | None
    baselines: bool
    timing_query_ids: np.ndarray | None = None
    baseline_dims: list[int] = field(default_factory=list)
    baseline_query_ids: np.ndarray | None = None
    pca: bool = True
    pca_fit_rows: int = 0
    random_draws: int = 0
    baseline_choice: str = ""
    seconds_per_unit: float | None = None
    min_timed_seconds: float = 0.0

    @property
    def baseline_queries(self) -> int:
        return self.nq if self.baseline_query_ids is None else len(self.baseline_query_ids)

    @property
    def timing_queries(self) -> int:
        return self.nq if self.timing_query_ids is None else len(self.timing_query_ids)

    def round_queries(self, round_index: int) -> int:
        """Queries searched in round ``round_index`` (0: every one, scored; later: the timed ones)."""
        return self.nq if round_index == 0 else self.timing_queries

    # the planned units of each piece of work, as run_benchmark counts them off
    def length_units(self, m: int, round_index: int) -> float:
        built = round_index == 0 or not self.held
        return (search_units(self.kind, self.n, m, self.round_queries(round_index), self.options)
                + (build_units(self.n, m) if built else 0.0))

    def funnel_units(self, round_index: int) -> float:
        if self.funnel is None:
            return 0.0
        short, rerank, shortlist = self.funnel
        q = self.round_queries(round_index)
        units = search_units(self.kind, self.n, short, q, self.options) + RERANK_UNITS * q * shortlist * rerank
        if round_index == 0 or not self.held:
            units += build_units(self.n, short) + (0 if self.held else build_units(self.n, rerank))
        return units

    def draw_units(self, m: int) -> float:
        if m == self.k:  # every k-subset is the whole code re-ordered: nothing to search
            return 0.0
        return build_units(self.n, m, self.k) + search_units(self.kind, self.n, m, self.baseline_queries,
                                                                  self.options)

    def pca_units(self, m: int) -> float:
        return (PROJECT_UNITS * self.n * self.k * m + build_units(self.n, m, self.k)
                + search_units(self.kind, self.n, m, self.baseline_queries, self.options))

    def fit_units_for(self, rows: int) -> float:
        return pca_fit_units(rows, self.k) if self.pca else 0.0

    def fit_units(self) -> float:
        return self.fit_units_for(self.pca_fit_rows) if self.baseline_dims else 0.0

    def sweep_units(self) -> float:
        return sum(self.length_units(m, r) + (self.funnel_units(r) if m == self.lengths[-1] else 0.0)
                   for r in range(self.rounds) for m in self.lengths)

    def baseline_units(self) -> float:
        return self.fit_units() + sum(self.random_draws * self.draw_units(m) + (self.pca_units(m) if self.pca else 0.0)
                                      for m in self.baseline_dims)

    def total_units(self) -> float:
        return self.sweep_units() + self.baseline_units()

    def plain_units(self) -> float:
        """A plain sweep's planned work: every query searched once at every length, each index built once."""
        return sum(search_units(self.kind, self.n, m, self.nq, self.options) + build_units(self.n, m)
                   for m in self.lengths)

    def estimated_seconds(self) -> dict | None:
        """``{"sweep", "baselines", "total"}`` seconds at the probe's rate (None without a probe)."""
        if self.seconds_per_unit is None:
            return None
        sweep, base = self.sweep_units() * self.seconds_per_unit, self.baseline_units() * self.seconds_per_unit
        return {"sweep": sweep + self.timing_floor_seconds(), "baselines": base,
                "total": sweep + self.timing_floor_seconds() + base}

    def timing_floor_seconds(self) -> float:
        """What the timed searches add beyond their planned units by running back to back for at
        least ``min_timed_seconds`` each (a small database's searches take milliseconds)."""
        if self.seconds_per_unit is None:
            return 0.0
        units = [search_units(self.kind, self.n, m, self.timing_queries, self.options) for m in self.lengths]
        if self.funnel is not None:
            short, rerank, shortlist = self.funnel
            units.append(search_units(self.kind, self.n, short, self.timing_queries, self.options)
                         + RERANK_UNITS * self.timing_queries * shortlist * rerank)
        return (self.rounds - 1) * sum(max(0.0, self.min_timed_seconds - u * self.seconds_per_unit) for u in units)

    def as_dict(self) -> dict:
        """The plan for the results (JSON-serialisable)."""
        return {"lengths": self.lengths, "rounds": self.rounds, "held": self.held, "held_bytes": self.held_bytes,
                "funnel": list(self.funnel) if self.funnel else None, "baseline_dims": self.baseline_dims,
                "baseline_queries": self.baseline_queries if self.baselines else 0,
                "pca": self.pca, "pca_fit_rows": self.pca_fit_rows, "baseline_choice": self.baseline_choice,
                "timing_queries": self.timing_queries,
                "units": {"sweep": self.sweep_units(), "baselines": self.baseline_units(),
                          "plain_sweep": self.plain_units()},
                "baseline_to_sweep_units": self.baseline_units() / self.sweep_units(),
                "total_to_plain_sweep_units": self.total_units() / self.plain_units(),
                "seconds_per_unit": self.seconds_per_unit, "estimated_seconds": self.estimated_seconds()}

    def describe(self) -> str:
        """The plan in words, for the log line before the work starts."""
        gib = 1 << 30
        timed = ("every query" if self.timing_query_ids is None else
                 f"a seeded sample of {self.timing_queries} of the {self.nq} queries")
        lines = [f"retrieval plan: database {self.n} x {self.k}, {self.nq} queries, R = {self.R}, {self.kind} index",
                 f"  lengths {', '.join(map(str, self.lengths))}; 1 scored round on every query + "
                 f"{self.rounds - 1} timed rounds on {timed} (each search repeated for at least "
                 f"{self.min_timed_seconds:g} s), "
                 + (f"every index held ({self.held_bytes / gib:.2f} GiB of the {self.budget / gib:.2f} GiB budget)"
                    if self.held else
                    f"each length rebuilt in every round (the indexes do not fit the "
                    f"{self.budget / gib:.2f} GiB budget together); speed-ups paired per round")]
        if self.funnel:
            lines.append(f"  funnel: shortlist {self.funnel[2]} with {self.funnel[0]} dims, rerank with {self.funnel[1]}")
        else:
            lines.append("  funnel: off")
        if not self.baselines:
            lines.append("  baselines: off")
        elif not self.baseline_dims:
            lines.append(f"  baselines: at no length ({self.baseline_choice})")
        else:
            pca = f"and PCA (fitted on {self.pca_fit_rows} rows) " if self.pca else "(no PCA) "
            lines.append(f"  baselines: {self.random_draws} random subsets {pca}"
                         f"at lengths {', '.join(map(str, self.baseline_dims))}, on {self.baseline_queries} of "
                         f"{self.nq} queries ({self.baseline_choice})")
        est = self.estimated_seconds()
        ratio = self.total_units() / self.plain_units()
        if est is not None:
            lines.append(f"  estimated time: {_minutes(est['total'])} (sweep {_minutes(est['sweep'])}, baselines "
                         f"{_minutes(est['baselines'])}; all of it {ratio:.2f}x the planned work of a plain sweep, "
                         f"{_minutes(self.plain_units() * self.seconds_per_unit)})")
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def make_plan(*, n: int, nq: int, k: int, R: int, lengths: list[int], kind: str, options: dict, budget: int,
              repeats: int, funnel: tuple[int, int, int | None] | None, baselines, seed: int,
              timing_sample: int | None = None) -> Plan:
    """The :class:`Plan` of one run.

    Args:
        timing_sample: queries the timed rounds search (a seeded sample; None: every query).
        funnel: (short_dim, rerank_dim, shortlist_size or None for 2 R), or None.
        baselines: a :class:`~retrieval.settings.BaselineSettings` or None.
    """
    if funnel is not None:
        funnel = (funnel[0], funnel[1], min(n, funnel[2] or DEFAULT_SHORTLIST_FACTOR * R))
    sizes = {m: index_bytes(kind, n, m, options) for m in lengths}
    funnel_extra = 0 if funnel is None else sum(index_bytes(kind, n, m, options) for m in funnel[:2] if m not in sizes)
    held = sum(sizes.values()) + funnel_extra <= budget
    plan = Plan(n=n, nq=nq, k=k, R=R, kind=kind, options=options, lengths=lengths, rounds=1 + repeats, held=held,
                held_bytes=sum(sizes.values()) + funnel_extra if held else 0, budget=budget, funnel=funnel,
                baselines=baselines is not None)
    if timing_sample is not None and timing_sample < nq:
        plan.timing_query_ids = _sample(nq, timing_sample, seed, 2)
    if baselines is not None:
        _plan_baselines(plan, baselines, seed)
    return plan


def _plan_baselines(plan: Plan, settings, seed: int) -> None:
    plan.random_draws = settings.random_draws
    sample = settings.query_sample
    if sample is not None and sample < plan.nq:
        plan.baseline_query_ids = _sample(plan.nq, sample, seed, 1)
    queries = ("every query" if plan.baseline_query_ids is None else
               f"a seeded sample of {plan.baseline_queries} of the {plan.nq} queries")
    fit_cap = plan.n if settings.pca_fit_rows is None else min(plan.n, settings.pca_fit_rows)
    plan.pca_fit_rows = fit_cap
    if settings.dims != "auto":
        plan.baseline_dims = list(plan.lengths) if settings.dims == "all" else sorted(
            {int(m) for m in settings.dims})
        missing = sorted(set(plan.baseline_dims) - set(plan.lengths))
        if missing:
            raise ValueError(f"baseline dims {missing} are not among the benchmarked lengths {plan.lengths}; "
                             "give lengths from dims (or 'auto' / 'all')")
        plan.baseline_choice = f"lengths as asked ({settings.dims if isinstance(settings.dims, str) else 'given'}), " \
                               f"{queries}"
        return
    allowance = max(settings.cost_ratio * plan.plain_units() - plan.sweep_units(), BASELINE_FLOOR_UNITS)
    # the fit may take a quarter of the allowance, keeping MIN_PCA_ROWS_PER_DIM rows per dimension;
    # when even that fit (its k x k eigendecomposition) exceeds half of it, PCA is left out
    floor = min(fit_cap, MIN_PCA_ROWS_PER_DIM * plan.k)
    fixed = pca_fit_units(0, plan.k)
    affordable = int((allowance / 4 - fixed) / (pca_fit_units(1, plan.k) - fixed)) if allowance / 4 > fixed else 0
    plan.pca = pca_fit_units(floor, plan.k) <= allowance / 2
    plan.pca_fit_rows = max(floor, min(fit_cap, affordable)) if plan.pca else 0
    spent = plan.fit_units_for(plan.pca_fit_rows)
    for m in plan.lengths:
        cost = plan.random_draws * plan.draw_units(m) + (plan.pca_units(m) if plan.pca else 0.0)
        if spent + cost > allowance:
            break
        plan.baseline_dims.append(m)
        spent += cost
    pca = ("" if plan.pca_fit_rows == fit_cap else f", the PCA fitted on {plan.pca_fit_rows} of up to {fit_cap} rows"
           ) if plan.pca else ", PCA left out (its fit alone would take over half of that)"
    plan.baseline_choice = (f"auto: the lengths from the shortest while the whole benchmark's planned work stays "
                            f"within {settings.cost_ratio:g}x a plain sweep's (or the baselines within "
                            f"{BASELINE_FLOOR_UNITS:.0e} units, whichever is more){pca}, {queries}")


def _sample(count: int, size: int, seed: int, stream: int) -> np.ndarray:
    """Sorted ids of a seeded sample of ``size`` of ``count`` (stream 1: baselines, 2: timing)."""
    return np.sort(np.random.default_rng([seed, stream]).choice(count, size, replace=False))


def probe_rate(database, queries, build, k: int) -> float:
    """Seconds per planned unit of exact search, from one short search at the full length.

    ``build(rows)`` builds the benchmark's kind of flat index over ``rows [r, k]`` (its backend
    and device). The probe reads at most ``PROBE_ROWS`` rows (and a working chunk's bytes) and
    ``PROBE_QUERIES`` queries.
    """
    rows = l2_normalize(database[0 : min(len(database), PROBE_ROWS, work_rows(k))])  # a working chunk at most
    xq = l2_normalize(queries[0 : min(len(queries), PROBE_QUERIES)])
    R = min(len(rows), 100)
    index = build(rows)
    index.search(xq[:8], R)  # thread pools, lazy allocations, a GPU's first call
    t0 = time.perf_counter()
    index.search(xq, R)
    seconds = time.perf_counter() - t0
    return seconds / (len(xq) * len(rows) * (k + SELECT_DIMS))
