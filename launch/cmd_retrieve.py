"""``eigenmap retrieve RUN --database DB.beton --queries Q.beton``: retrieval quality and speed
of adaptive-length codes.

The eigenfunction outputs are ordered by eigenvalue, so the first m dimensions of a code are a
usable short code. For each length m (default: powers of two up to k, and k): mAP@R,
precision@R and recall@R (a result is relevant when it shares a label with the query) and
queries/s, against two baselines at the same m (a random m-subset of dimensions, PCA to m
fitted on the database) and the adaptive funnel (shortlist with a short prefix, rerank with the
full code). Exact search (``--index flat``) or approximate (``ivf``, ``hnsw``); FAISS on the GPU
when it has one, an exact torch search on a CUDA GPU otherwise, else FAISS on the CPU
(``--backend`` overrides); the one used is named in every output.

``--database``/``--queries`` are ``.beton`` files (their arrays are extracted through RUN's
model once, into ``RUN/eval/features/``) or feature folders written by ``eigenmap extract``
(then RUN may be left out: pass ``--out``). ``--features`` benchmarks the saved encoder
features [N, F] instead of the codes. Writes ``retrieval.json``, ``retrieval.md`` and two PNG
plots into ``RUN/eval/retrieval/<codes|features>/`` (or ``--out``), and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launch.arg_types import int_at_least
from launch.eval_inputs import (add_extraction_arguments, dataset_arrays, different_sets, open_run, pick_device,
                                same_classes)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("retrieve", help="retrieval quality and speed against code length",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", default=None, metavar="RUN",
                   help="a finished run directory (needed when a set is a .beton)")
    p.add_argument("--database", type=Path, required=True, help="database: .beton or feature folder")
    p.add_argument("--queries", type=Path, required=True, help="queries: .beton or feature folder")
    p.add_argument("--features", action="store_true", help="the encoder features instead of the codes")
    p.add_argument("--dims", type=int, nargs="+", default=None, metavar="M",
                   help="code lengths (default: powers of two up to the full length, and it)")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="exact or approximate search")
    p.add_argument("--backend", choices=("auto", "faiss-cpu", "faiss-gpu", "torch"), default="auto",
                   help="search backend (default auto: faiss-gpu, else torch on CUDA, else faiss-cpu)")
    p.add_argument("--R", type=int_at_least("--R", 1), default=100,
                   help="neighbours per query and metric cut-off (default 100)")
    p.add_argument("--no-baselines", action="store_true", help="skip the random-subset and PCA baselines")
    p.add_argument("--no-funnel", action="store_true", help="skip the adaptive funnel")
    p.add_argument("--repeats", type=int_at_least("--repeats", 1), default=3, help="timed rounds per length (default 3)")
    p.add_argument("--memory-budget", type=_memory_size, default="4GiB", metavar="SIZE",
                   help="database-sized buffers held at once (indexes, chunks read), e.g. 4GiB, 512MiB, 8GB "
                        "(default 4GiB); peak memory is this plus a fixed overhead")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RUN/eval/retrieval/<codes|features>)")
    add_extraction_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here too")
    p.set_defaults(func=run)


def _memory_size(text: str) -> int:
    from retrieval.settings import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--memory-budget: {e}") from None


def run(args: argparse.Namespace) -> int:
    import retrieval
    from eigenmap.run_dir import RunDirError

    array = "features" if args.features else "codes"
    try:
        if args.run is None and args.out is None:
            raise ValueError("pass RUN (the report goes to RUN/eval/retrieval/) or --out DIR")
        device = pick_device(args.device)
        loaded = open_run(args.run, device)
        database = dataset_arrays(loaded, args.run, args.database, args, device)
        queries = dataset_arrays(loaded, args.run, args.queries, args, device)
        different_sets(database, queries, ("--database", "--queries"),
                       "every query would find itself first, which inflates mAP@R")
        same_classes(database, queries, ("--database", "--queries"))  # relevance compares labels
        results = retrieval.run_benchmark(
            getattr(database, array), database.labels, getattr(queries, array), queries.labels,
            dims=args.dims, R=args.R, name=array, seed=loaded.config.train.seed if loaded is not None else 0,
            search=retrieval.SearchSettings(index=args.index, backend=args.backend,
                                            memory_budget_bytes=args.memory_budget),
            timing=retrieval.TimingSettings(repeats=args.repeats),
            baselines=None if args.no_baselines else retrieval.BaselineSettings(),
            funnel=None if args.no_funnel else retrieval.FunnelSettings())
    except (RunDirError, ValueError) as e:
        print(f"eigenmap retrieve: error: {e}", file=sys.stderr)
        return 2
    results["inputs"] = {"run": str(args.run.resolve()) if args.run else None,
                         "step": loaded.step if loaded is not None else None,
                         "database": str(database.folder), "queries": str(queries.folder)}
    out = args.out or args.run / "eval" / "retrieval" / array
    paths = retrieval.write_report(results, out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(paths["markdown"].read_text())
    print(f"written to {out}")
    return 0
