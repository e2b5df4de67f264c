"""``eigenmap export RUN_DIR [--step N] [--out DIR]``: weights from a kept checkpoint.

A finished run writes ``model.pt`` and ``encoder.pt`` itself; a run that was preempted,
stopped or is still going has only its checkpoints. This writes the same two files (loadable
with ``torch.load(..., weights_only=True)``; ``encoder.pt`` is a plain torchvision ResNet state
dict) from the newest good checkpoint, or the one of step N. Exit codes: 0 written, 2 no such
run, step or usable checkpoint, or weights already there without --overwrite.

``--format timm --out DIR`` writes the encoder in timm's format instead (``model.safetensors``
and ``config.json``, :mod:`eigenmap.export_timm`), from the run's final weights or the kept
checkpoint of ``--step N``, and checks that timm loads it back to the same features.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  eigenmap export runs/imagenette                     # newest good checkpoint -> runs/imagenette/model.pt
  eigenmap export runs/imagenette --step 4000 --out runs/imagenette/step4000
  eigenmap export runs/vit --format timm --out runs/vit/timm   # timm.create_model("local-dir:runs/vit/timm", ...)"""


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
    p.add_argument("--format", choices=("torch", "timm"), default="torch",
                   help="torch (default): model.pt + encoder.pt; timm: the encoder as model.safetensors + config.json "
                        "under timm's key names (a timm backbone, or a torchvision ResNet as timm's resnetNN); "
                        "needs --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "timm":
        return run_timm(args)
    from eigenmap.run import RunDirError, export_checkpoint

    try:
        written = export_checkpoint(args.run_dir, step=args.step, out=args.out, overwrite=args.overwrite)
    except RunDirError as e:
        print(f"eigenmap export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported step {written['step']} of {args.run_dir}: {written['model.pt']} and {written['encoder.pt']}")
    return 0


def run_timm(args: argparse.Namespace) -> int:
    from eigenmap.export_timm import TimmExportError, export_timm
    from eigenmap.run import RunDirError, load_run

    if args.out is None:
        print("eigenmap export: error: --format timm needs --out DIR (the folder timm loads)", file=sys.stderr)
        return 2
    try:
        loaded = load_run(args.run_dir, step=args.step)
        written = export_timm(loaded.config, loaded.model.backbone, args.out, overwrite=args.overwrite)
    except (RunDirError, TimmExportError) as e:
        print(f"eigenmap export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported the encoder of {args.run_dir} (step {loaded.step}) as timm's {written['architecture']} to "
          f"{args.out}: model.safetensors, config.json; timm's reload gives the same features (max abs difference "
          f"{written['max_abs_diff']:.2e})")
    return 0
