"""``eigenmap export RUN_DIR [--step N] [--out DIR]``: weights from a kept checkpoint.

A finished run writes ``model.pt`` and ``encoder.pt`` itself; a run that was preempted,
stopped or is still going has only its checkpoints. This writes the same two files (loadable
with ``torch.load(..., weights_only=True)``; ``encoder.pt`` is a plain torchvision ResNet state
dict) from the newest good checkpoint, or the one of step N. Exit codes: 0 written, 2 no such
run, step or usable checkpoint, or weights already there without --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  eigenmap export runs/imagenette                     # newest good checkpoint -> runs/imagenette/model.pt
  eigenmap export runs/imagenette --step 4000 --out runs/imagenette/step4000"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write model.pt / encoder.pt from a kept checkpoint of a run",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run's train.run_dir")
    p.add_argument("--step", type=int, default=None, metavar="N",
                   help="the kept checkpoint of step N (default: the newest that passes its checksums)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder to write into (default: RUN_DIR, where evaluation looks for model.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace model.pt / encoder.pt already in the folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eigenmap.run import RunDirError, export_checkpoint

    try:
        written = export_checkpoint(args.run_dir, step=args.step, out=args.out, overwrite=args.overwrite)
    except RunDirError as e:
        print(f"eigenmap export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported step {written['step']} of {args.run_dir}: {written['model.pt']} and {written['encoder.pt']}")
    return 0
