"""``eigenmap retrieve RUN --database DB.beton --queries Q.beton``: retrieval quality and speed
of adaptive-length codes.

The eigenfunction outputs are ordered by eigenvalue, so the first m dimensions of a code are a
usable short code. For each length m (default: powers of two from 4 up to k, and k, as the official
Neural Eigenmaps retrieval code scores them): mAP@R,
precision@R and recall@R (a result is relevant when it shares a label with the query; multi-label
sets included) and queries/s, against two baselines at the same m (a random m-subset of
dimensions, PCA to m fitted on the database) and the adaptive funnel (shortlist with a short
prefix, rerank with the full code). Exact search (``--index flat``) or approximate (``ivf``,
``hnsw``); FAISS on the GPU when it has one, an exact torch search on a CUDA GPU otherwise, else
FAISS on the CPU (``--backend`` overrides); the one used is named in every output.

``--database``/``--queries`` are ``.beton`` files (their arrays are extracted through RUN's
model once, into ``RUN/eval/features/``), feature folders written by ``eigenmap extract``, or
folders of anyone's arrays (``codes.npy`` and/or ``features.npy`` [N, d] with ``labels.npy`` [N]
or [N, C]); with folders RUN may be left out (pass ``--out``). Both sets, the options and the
class lists are checked before anything is extracted; the queries must be held out from the
database (one set, or a byte copy of it, in both roles is refused). ``--features`` benchmarks
the encoder features [N, F] instead of the codes. Writes ``retrieval.json``, ``retrieval.md``
and two PNG plots into ``RUN/eval/retrieval/<codes|features>/<database>--<queries>/`` (or
``--out``; a folder holding the report of other inputs is kept unless ``--overwrite``), and
``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launch.arg_types import int_at_least, memory_size
from retrieval.settings import DEFAULT_MIN_SECONDS
from launch.eval_inputs import INTERRUPTED, add_extraction_arguments, extractor, pick_device

CONSEQUENCE = "every query would find itself first, which inflates mAP@R"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("retrieve", help="retrieval quality and speed against code length",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", default=None, metavar="RUN",
                   help="a finished run directory (needed when a set is a .beton)")
    p.add_argument("--database", type=Path, required=True, help="database: .beton, feature folder or arrays folder")
    p.add_argument("--queries", type=Path, required=True, help="queries: .beton, feature folder or arrays folder")
    p.add_argument("--features", action="store_true", help="the encoder features instead of the codes")
    p.add_argument("--dims", type=int, nargs="+", default=None, metavar="M",
                   help="code lengths (default: powers of two from 4 up to the full length k, and k; 1 and 2 only when asked)")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="exact or approximate search")
    p.add_argument("--backend", choices=("auto", "faiss-cpu", "faiss-gpu", "torch"), default="auto",
                   help="search backend (default auto: faiss-gpu, else torch on CUDA, else faiss-cpu)")
    p.add_argument("--R", type=int_at_least("--R", 1), default=100,
                   help="neighbours per query and metric cut-off (default 100)")
    p.add_argument("--no-baselines", action="store_true", help="skip the random-subset and PCA baselines")
    p.add_argument("--no-funnel", action="store_true", help="skip the adaptive funnel")
    p.add_argument("--repeats", type=int_at_least("--repeats", 1), default=3, help="timed rounds per length (default 3)")
    p.add_argument("--timing-queries", type=int_at_least("--timing-queries", 0), default=1000, metavar="N",
                   help="the timed rounds search a seeded sample of N queries (default 1000; 0: every query); "
                        "quality is always scored on every query")
    p.add_argument("--min-timed-seconds", type=float, default=DEFAULT_MIN_SECONDS, metavar="S",
                   help="each timed search (one length in one round) is repeated back to back for at least S "
                        f"seconds and q/s counts one search (default {DEFAULT_MIN_SECONDS:g}; 0: a single search): a "
                        "millisecond search timed once measures the scheduler's noise")
    p.add_argument("--memory-budget", type=memory_size("--memory-budget"), default="4GiB", metavar="SIZE",
                   help="database-sized buffers held at once (indexes, chunks read), e.g. 4GiB, 512MiB, 8GB "
                        "(default 4GiB); peak memory is this plus a fixed overhead")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default RUN/eval/retrieval/<codes|features>/<database>--<queries>)")
    p.add_argument("--overwrite", action="store_true", help="replace a report of other inputs in the folder")
    p.add_argument("--recompute", action="store_true",
                   help="measure again although the folder holds the report of these inputs, weights and settings "
                        "(default: it is reused)")
    add_extraction_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import retrieval
    from retrieval.checks import check_R
    from retrieval.prefix import resolve_lengths
    from eigenmap.eval.inputs import EvalInputError, check_pair, describe, load_arrays, require_arrays
    from eigenmap.eval.reports import check_report_folder, finished_report, publish_report
    from eigenmap.run import RunDir, RunDirError, load_run, pair_name

    array = "features" if args.features else "codes"
    try:
        if args.run is None and args.out is None:
            raise EvalInputError("pass RUN (the report goes to RUN/eval/retrieval/) or --out DIR")
        device = pick_device(args.device)
        # every path, the run, the pair and the options are checked before anything is extracted
        database, queries = describe(args.database, "--database"), describe(args.queries, "--queries")
        loaded = load_run(args.run, device=device) if args.run is not None else None
        check_pair(database, queries, CONSEQUENCE)  # relevance compares labels, so they must mean the same
        for inp in (database, queries):
            require_arrays(inp, array)
        if loaded is None and "beton" in (database.kind, queries.kind):
            raise EvalInputError("a .beton set needs the RUN whose encoder reads it")
        width = database.widths.get(array) or (loaded.model.feat_dim if args.features
                                                else loaded.config.model.projector_out_dim)
        lengths = resolve_lengths(args.dims, width)
        check_R(args.R, database.num_images)
        inputs = {"run": str(args.run.resolve()) if args.run else None, "step": loaded.step if loaded else None,
                  "database": database.to_dict(), "queries": queries.to_dict()}
        out = args.out or RunDir(args.run).retrieval(array, pair_name(database.name, queries.name))
        check_report_folder(out, "retrieval.json", inputs, overwrite=args.overwrite, out_flag="--out",
                            lost=lambda report: _lost(report, lengths, args))
        request = _request(args, loaded, device)
        if not args.recompute and finished_report(out, "retrieval.json", inputs, request) is not None:
            return _reused(out, args)
        extract = extractor(args, loaded, args.run, device) if loaded is not None else None
        db_arrays, q_arrays = (load_arrays(inp, run_dir=args.run, weights=loaded and loaded.weights,
                                           scale_by_eigenvalue=args.scale_by_eigenvalue,
                                           resolution=loaded and loaded.config.data.resolution, extract=extract)
                               for inp in (database, queries))
        results = retrieval.run_benchmark(
            getattr(db_arrays, array), db_arrays.labels, getattr(q_arrays, array), q_arrays.labels,
            dims=lengths, R=args.R, name=array, seed=loaded.config.train.seed if loaded is not None else 0,
            search=retrieval.SearchSettings(index=args.index, backend=args.backend,
                                            memory_budget_bytes=args.memory_budget),
            timing=retrieval.TimingSettings(repeats=args.repeats, query_sample=args.timing_queries or None,
                                            min_seconds=args.min_timed_seconds),
            baselines=None if args.no_baselines else retrieval.BaselineSettings(),
            funnel=None if args.no_funnel else retrieval.FunnelSettings())
        results["overlap"] = _overlap(db_arrays, q_arrays)
    except (RunDirError, ValueError) as e:
        print(f"eigenmap retrieve: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eigenmap retrieve: interrupted; no report was written (arrays extracted before the interrupt are "
              "kept and reused); run the same command again", file=sys.stderr)
        return INTERRUPTED
    results["inputs"], results["request"] = inputs, request
    paths = publish_report(out, lambda tmp: retrieval.write_report(results, tmp))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print((out / paths["markdown"].name).read_text())
    print(f"written to {out}")
    return 0


def _lost(report: dict, lengths: list[int], args: argparse.Namespace) -> list[str]:
    """What the retrieval report of the same inputs measured that this request would not: its
    lengths, baselines and funnel (a narrower request must not silently replace a fuller one)."""
    lost = []
    gone = sorted(set(report.get("dims") or []) - set(lengths))
    if gone:
        lost.append(f"the lengths {', '.join(map(str, gone))} (this request: {', '.join(map(str, lengths))})")
    if report.get("baselines") is not None and args.no_baselines:
        lost.append("the random-subset and PCA baselines (this request: --no-baselines)")
    if report.get("funnel") is not None and args.no_funnel:
        lost.append("the funnel (this request: --no-funnel)")
    return lost


def _request(args: argparse.Namespace, loaded, device) -> dict:
    """What the report depends on besides the inputs: the weights (by content) and the options."""
    from eigenmap.durable import sha256_of

    options = ("features", "dims", "index", "backend", "R", "no_baselines", "no_funnel", "repeats", "timing_queries",
               "min_timed_seconds", "memory_budget", "scale_by_eigenvalue")
    return {"weights_sha256": sha256_of(loaded.weights) if loaded is not None else None,
            "seed": loaded.config.train.seed if loaded is not None else 0, "device": str(device),
            **{name: getattr(args, name) for name in options}}


def _reused(out: Path, args: argparse.Namespace) -> int:
    """A finished report of the same inputs, weights and options: shown again, not measured again."""
    print(f"eigenmap retrieve: {out / 'retrieval.json'} holds the report of these inputs, weights and options: "
          "reused (--recompute measures it again)", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text((out / "retrieval.json").read_text())
    print((out / "retrieval.md").read_text())
    print(f"written to {out}")
    return 0


def _overlap(database, queries) -> dict:
    """Queries with a near-duplicate in the database: said and recorded, not refused (a database
    may hold the queries on purpose)."""
    from eigenmap.eval.overlap import overlap_sentence, set_overlap

    found = set_overlap(database, queries)
    if found["count"]:
        print(f"eigenmap retrieve: note: {overlap_sentence(found, '--database', '--queries')}; each finds its "
              "copy first, which raises mAP", file=sys.stderr)
    return found
