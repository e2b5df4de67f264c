"""``eigenmap extract RUN DATA.beton``: a dataset's encoder features and codes, kept on disk.

Writes ``RUN/eval/features/<name>/`` (or ``--out``): ``features.npy`` [N, F], ``codes.npy``
[N, k], ``labels.npy`` ([N] class indices, or [N, C] 0/1 flags of a multi-label set) and the
``features.json`` sidecar. ``eigenmap probe`` and ``eigenmap retrieve`` reuse them while the
weights and the file's contents are unchanged, and accept the folder itself in place of a
``.beton``. Ctrl-C removes the partial folder (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launch.eval_inputs import INTERRUPTED, add_extraction_arguments, extractor, pick_device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("extract", help="encoder features and eigenfunction codes of a dataset, to disk",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory (train.run_dir)")
    p.add_argument("data", type=Path, metavar="DATA.beton", help="a dataset written by `eigenmap prepare`")
    p.add_argument("--out", type=Path, default=None, help="feature folder (default RUN/eval/features/<name>)")
    add_extraction_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the sidecar's figures here too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eigenmap.eval.features import feature_folder
    from eigenmap.eval.inputs import EvalInputError, describe
    from eigenmap.run import RunDirError, load_run

    try:
        device = pick_device(args.device)
        # the file first (a typo is named before the run loads)
        if describe(args.data, "DATA").kind != "beton":
            raise EvalInputError(f"DATA '{args.data}' is a folder of arrays already; pass a .beton written by "
                                 "`eigenmap prepare`")
        loaded = load_run(args.run, device=device)
        folder = args.out or feature_folder(args.run, args.data, scale_by_eigenvalue=args.scale_by_eigenvalue)
        arrays = extractor(args, loaded, args.run, device)(args.data, folder)
    except (RunDirError, ValueError) as e:
        print(f"eigenmap extract: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eigenmap extract: interrupted; the partial arrays were removed (an earlier complete folder is kept); "
              "run the same command again", file=sys.stderr)
        return INTERRUPTED
    meta = arrays.meta
    print(f"extracted {meta['shapes']['features'][0]} images of {args.data.name}: features "
          f"{meta['shapes']['features']}, codes {meta['shapes']['codes']} in {meta['seconds']:.1f} s "
          f"({meta['images_per_second']:.0f} images/s on {meta['device']}) -> {arrays.folder}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**meta, "folder": str(arrays.folder)}, indent=1) + "\n")
    return 0
