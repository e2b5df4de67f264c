#!/usr/bin/env python
"""Queries per second against code length: exact and approximate search, and the funnel.

Synthetic codes shaped like eigenfunction outputs (``--database`` rows and ``--queries``
queries of ``--dim`` dimensions, float32): ``--classes`` classes with Gaussian centres; row i
of class y is ``s * (a * mu_y + noise)`` where the per-dimension scale ``s_j = (1 + j)^-1/2``
decays like the square root of an eigenvalue spectrum and the class signal ``a_j = (1 + j /
(dim / 16))^-1/2`` sits mostly in the leading 1/16 of the dimensions. Labels are the classes, so
mAP@R is meaningful and the funnel's quality can be compared with the full length's.

For each index kind (``--index``, default ``flat,ivf``) and each prefix length (powers of two from 4 up
to ``--dim``) the tool builds the index once (untimed: the prefix, normalisation and index are
what a deployment would build once per length) and times one search of all queries per round:
one warm-up round, then ``--repeats`` rounds interleaved across lengths (the funnel included);
the best round gives q/s, the median round is recorded beside it. A search during which other
processes took over 10% of the CPU is run again (``--busy-retries`` times at most) and the round
keeps its fastest try; before each timed search the tool waits (``--quiet-wait`` seconds at most)
for other processes to leave the CPU. ``speedup`` is q/s over the full length's q/s;
``speedup_at_1_16`` is exact search at ``dim / 16``, with the median of the per-round ratios
beside it.
``raw_faiss_comparison`` times a bare FAISS ``IndexFlatIP``, this package's index and the score
matrix alone (the matrix product without the top-R selection) at both lengths in the same rounds.
Every timed search records the CPU share other processes took meanwhile (``background_cpu``). On
a shared machine the rounds of one run spread far more at short prefixes than at the full length
(``seconds`` per length in the JSON), and the speed-ups move with them: read the per-round spread
before comparing runs.

Run: ``python tools/bench_retrieval.py --json docs/results/cpu_bench_retrieval.json``
(defaults: 100,000 x 2,048, 1,000 queries, R = 100, flat and IVF, the device ``auto`` picks).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import retrieval  # noqa: E402

logger = logging.getLogger("bench_retrieval")

TARGETS = {"exact_speedup_at_1_16_cpu": 13.0, "exact_speedup_at_1_16_gpu": 8.0,
           "funnel_map_within_points": 0.5, "funnel_speedup": 5.0}


def synthetic_codes(n: int, nq: int, dim: int, classes: int, seed: int):
    """(database [n, dim], database labels [n], queries [nq, dim], query labels [nq]), float32."""
    rng = np.random.default_rng(seed)
    j = np.arange(dim, dtype=np.float32)
    scale = (1 + j) ** -0.5
    signal = (1 + j / max(1, dim // 16)) ** -0.5
    centres = rng.standard_normal((classes, dim), dtype=np.float32) * signal

    def draw(labels):
        x = np.empty((len(labels), dim), dtype=np.float32)
        for i0 in range(0, len(labels), 10_000):  # bounded temporaries
            part = labels[i0 : i0 + 10_000]
            x[i0 : i0 + len(part)] = (rng.standard_normal((len(part), dim), dtype=np.float32) + centres[part]) * scale
        return x

    db_labels, q_labels = rng.integers(0, classes, n), rng.integers(0, classes, nq)
    return draw(db_labels), db_labels, draw(q_labels), q_labels


def _round_ratio(full: list[float], short: list[float]) -> float:
    """Median over rounds of (full-length seconds / short seconds) of the same round."""
    return statistics.median(f / s for f, s in zip(full, short))


def _scores_only(xb: np.ndarray, xq: np.ndarray, block: int) -> None:
    """The inner products of exact search and nothing else: [nq, block] score blocks of the
    database, as FAISS's BLAS path computes them, with no top-R selection."""
    out = np.empty((len(xq), block), dtype=np.float32)
    for j in range(0, len(xb), block):
        rows = xb[j:j + block]
        np.matmul(xq, rows.T, out=out[:, :len(rows)])


def raw_faiss_comparison(db, q, dim: int, R: int, timing: dict) -> dict:
    """Full length and dim/16 timed in the same interleaved rounds three ways: a bare FAISS
    ``IndexFlatIP.search`` (FAISS's own settings), this package's flat index, and the score matrix
    alone (numpy's BLAS over FAISS's database blocks, no selection). The ratio of the first two
    speed-ups shows what the package adds or loses over raw FAISS on the same machine state; the
    third is the speed-up the matrix product allows by itself (another build of BLAS than FAISS's,
    so a close bound, not an exact one, on what any exact search that computes every score reaches)."""
    from retrieval.index import build_index
    from retrieval.prefix import prefix_codes
    from retrieval.timing import time_interleaved

    runs, dims = {}, (dim, dim // 16)
    block = int(faiss.cvar.distance_compute_blas_database_bs)
    for m in dims:
        xb, xq = prefix_codes(db, m), prefix_codes(q, m)
        raw = faiss.IndexFlatIP(m)
        raw.add(xb)
        ours = build_index(xb, backend="faiss-cpu")
        runs[f"raw {m}"] = lambda raw=raw, xq=xq: raw.search(xq, R)
        runs[f"retrieval {m}"] = lambda ours=ours, m=m: ours.search(prefix_codes(q, m), R)
        runs[f"scores_only {m}"] = lambda xb=xb, xq=xq: _scores_only(xb, xq, block)
    t = time_interleaved(runs, **timing)
    out = {}
    for who in ("raw", "retrieval", "scores_only"):
        full, short = t[f"{who} {dims[0]}"], t[f"{who} {dims[1]}"]
        out[who] = {"qps_full": len(q) / full["best_seconds"], "qps_1_16": len(q) / short["best_seconds"],
                    "speedup_at_1_16": full["best_seconds"] / short["best_seconds"],
                    "speedup_at_1_16_round_median": _round_ratio(full["seconds"], short["seconds"])}
    out["scores_only"]["block_rows"] = block
    return out


def _summary(results: dict) -> dict:
    """The per-length figures the tool reports, from a run_benchmark result; ``speedup_at_1_16`` is
    the best-of figure, the per-round median and range beside it."""
    lengths = [{"dim": r["dim"], "qps": r["qps"], "qps_median": r["qps_median"], "speedup": r["speedup"],
                "speedup_median": r["speedup_median"], "speedup_range": r["speedup_range"],
                "map": r["codes"]["map"], "seconds": r["seconds"], "background_cpu": r["background_cpu"],
                "tries": r["tries"], "build_seconds": r["build_seconds"]} for r in results["lengths"]]
    k = results["sizes"]["code_length"]
    sixteenth = next((r for r in lengths if k % 16 == 0 and r["dim"] == k // 16), None)
    return {
        "search": results["search"],
        "lengths": lengths,
        "speedup_at_1_16": None if sixteenth is None else sixteenth["speedup"],
        "speedup_at_1_16_round_median": None if sixteenth is None else sixteenth["speedup_median"],
        "speedup_at_1_16_round_range": None if sixteenth is None else sixteenth["speedup_range"],
    }


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    db, db_labels, q, q_labels = synthetic_codes(args.database, args.queries, args.dim, args.classes, args.seed)
    logger.info("synthetic codes %d x %d in %.1f s", args.database, args.dim, time.perf_counter() - t0)
    kinds = args.index
    timing = retrieval.TimingSettings(repeats=args.repeats, busy_retries=args.busy_retries,
                                      quiet_wait_seconds=args.quiet_wait)

    def search(kind: str, **options) -> retrieval.SearchSettings:
        return retrieval.SearchSettings(index=kind, backend=args.backend, device=args.device,
                                        memory_budget_bytes=int(args.memory_budget_gib * (1 << 30)),
                                        index_options=options)

    common = dict(R=args.R, baselines=None, seed=args.seed, timing=timing)
    out = {"settings": {"database": args.database, "queries": args.queries, "dim": args.dim, "R": args.R,
                        "classes": args.classes, "repeats": args.repeats, "busy_retries": args.busy_retries,
                        "quiet_wait_seconds": args.quiet_wait,
                        "seed": args.seed, "index": kinds,
                        "memory_budget_gib": args.memory_budget_gib},
           "machine": {"cpu_count": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                       "faiss_version": faiss.__version__, "platform": platform.platform()},
           "timing": retrieval.benchmark.TIMING_METHOD, "targets": TARGETS}
    exact = retrieval.run_benchmark(db, db_labels, q, q_labels, search=search("flat"),
                                    funnel=retrieval.FunnelSettings(short_dim=args.short_dim,
                                                                    shortlist_size=args.shortlist), **common)
    out.update(backend=exact["search"]["backend"], device=exact["search"]["device"], index=exact["search"]["index"])
    out.update(_summary(exact))
    f = exact["funnel"]
    out["funnel"] = {key: f[key] for key in ("short_dim", "rerank_dim", "shortlist_size", "rerank_device", "map",
                                             "full_length_map", "map_delta_points", "qps", "qps_median", "speedup",
                                             "shortlist_seconds", "rerank_seconds", "seconds", "background_cpu",
                                             "tries")}
    out["funnel"]["speedup_round_median"] = f["speedup_median"]
    out["funnel"]["speedup_round_range"] = f["speedup_range"]
    if args.dim % 16 == 0 and exact["search"]["backend"] == "faiss-cpu":
        out["raw_faiss_comparison"] = raw_faiss_comparison(db, q, args.dim, args.R, timing.as_dict())
    out["approximate"] = {}
    for kind in kinds:
        if kind != "flat":
            options = {"nlist": args.nlist, "nprobe": args.nprobe} if kind == "ivf" else {}
            approx = retrieval.run_benchmark(db, db_labels, q, q_labels, search=search(kind, **options), funnel=None,
                                             **common)
            out["approximate"][kind] = _summary(approx)
    background = [b for r in exact["lengths"] for b in r["background_cpu"] if b is not None]
    out["machine"]["background_cpu_median"] = statistics.median(background) if background else None
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def print_table(out: dict) -> None:
    s = out["settings"]
    print(f"backend {out['backend']} on {out['device']}, index {out['index']}, "
          f"{out['machine']['faiss_threads']} FAISS threads; database {s['database']} x {s['dim']} float32, "
          f"{s['queries']} queries, R = {s['R']}, best of {s['repeats']} interleaved rounds")
    kinds = list(out["approximate"])
    head = f"{'length':>7} | {'exact q/s':>10} {'speed-up':>8} {'mAP@R':>7}"
    for kind in kinds:
        head += f" | {kind + ' q/s':>10} {'speed-up':>8} {'mAP@R':>7}"
    print(head)
    print("-" * len(head))
    for i, rec in enumerate(out["lengths"]):
        line = f"{rec['dim']:>7} | {rec['qps']:>10.0f} {rec['speedup']:>7.2f}x {rec['map']:>7.4f}"
        for kind in kinds:
            a = out["approximate"][kind]["lengths"][i]
            line += f" | {a['qps']:>10.0f} {a['speedup']:>7.2f}x {a['map']:>7.4f}"
        print(line)
    if out["speedup_at_1_16"] is not None:
        target = TARGETS["exact_speedup_at_1_16_cpu" if out["device"] == "cpu" else "exact_speedup_at_1_16_gpu"]
        low, high = out["speedup_at_1_16_round_range"]
        print(f"exact speed-up at 1/16 ({s['dim'] // 16} dims): {out['speedup_at_1_16_round_median']:.2f}x median of "
              f"per-round ratios (range {low:.2f}-{high:.2f}x; best-of {out['speedup_at_1_16']:.2f}x); "
              f"target >= {target:g}x")
    raw = out.get("raw_faiss_comparison")
    if raw:
        print(f"same rounds, exact at 1/16 vs full: bare FAISS IndexFlatIP {raw['raw']['speedup_at_1_16']:.2f}x "
              f"({raw['raw']['qps_1_16']:.0f} / {raw['raw']['qps_full']:.0f} q/s), this package "
              f"{raw['retrieval']['speedup_at_1_16']:.2f}x ({raw['retrieval']['qps_1_16']:.0f} / "
              f"{raw['retrieval']['qps_full']:.0f} q/s); the scores alone (no selection) "
              f"{raw['scores_only']['speedup_at_1_16']:.2f}x")
    f = out["funnel"]
    print(f"funnel {f['short_dim']} -> {f['rerank_dim']} dims, {f['shortlist_size']} shortlisted: mAP@R {f['map']:.4f} "
          f"vs {f['full_length_map']:.4f} full length ({f['map_delta_points']:+.2f} points); {f['qps']:.0f} q/s = "
          f"{f['speedup']:.2f}x full length (median of rounds {f['speedup_round_median']:.2f}x; shortlist "
          f"{f['shortlist_seconds']:.3f} s + rerank {f['rerank_seconds']:.3f} s)")
    bg = out["machine"]["background_cpu_median"]
    if bg is not None:
        print(f"other processes used {100 * bg:.0f}% of the machine's CPU during the median timed search")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--database", type=int, default=100_000, help="database rows")
    p.add_argument("--queries", type=int, default=1_000, help="queries, searched in one batch")
    p.add_argument("--dim", type=int, default=2_048, help="code length; prefixes are the powers of two from 4 up to it")
    p.add_argument("--classes", type=int, default=100, help="classes of the synthetic codes")
    p.add_argument("--R", type=int, default=100, help="neighbours per query (mAP@R)")
    p.add_argument("--index", default="flat,ivf", help="comma-separated: flat (always), ivf, hnsw")
    p.add_argument("--backend", default="auto", choices=retrieval.backend.BACKENDS)
    p.add_argument("--device", default=None, help="torch device for --backend torch (cpu, cuda, cuda:1)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    p.add_argument("--busy-retries", type=int, default=2,
                   help="time a search again (at most this many times) when other processes took over 10%% "
                        "of the CPU during it; the round keeps its fastest try")
    p.add_argument("--quiet-wait", type=float, default=2.0,
                   help="before each timed search, wait up to this many seconds for other processes to "
                        "leave the CPU (0: no wait)")
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: FAISS's default, all cores)")
    p.add_argument("--short-dim", type=int, default=None, help="funnel shortlist length (default dim/16)")
    p.add_argument("--shortlist", type=int, default=None, help="funnel candidates per query (default 2 R)")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default sqrt(database))")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default nlist/16)")
    p.add_argument("--memory-budget-gib", type=float, default=4.0, help="database bytes held at once, GiB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    for name in ("database", "queries", "dim", "classes", "R", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1; got {getattr(args, name)}")
    args.index = [k for k in args.index.split(",") if k]
    unknown = set(args.index) - set(retrieval.index.INDEX_KINDS)
    if unknown or "flat" not in args.index:
        p.error(f"--index takes flat (always: the exact search the speed-ups are about) plus ivf and/or hnsw, "
                f"comma-separated; got {','.join(args.index)}")
    if args.R > args.database:
        p.error(f"--R {args.R} is larger than --database {args.database}; use R <= database rows")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = run(args)
    except ValueError as err:  # bad settings, named by the library
        print(f"bench_retrieval: {err}", file=sys.stderr)
        return 2
    out["command"] = " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv)))
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
