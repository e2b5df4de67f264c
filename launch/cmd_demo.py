"""``eigenmap demo``: the main job end to end on data that every machine can install.

1. ``eigenmap prepare`` writes Fashion-MNIST (Debian's ``dataset-fashion-mnist``, installed by
   ``make setup``) to an FFCV file, once;
2. ``eigenmap train configs/demo.yaml`` trains a ResNet-18 with the NeuralEF loss on an embedded
   local Ray cluster of two DeepSpeed workers (checkpoints, TensorBoard, exported encoder);
3. the run's figures are printed: the objective (loss + alpha * reg) at its first and last log
   step, the throughput, and the leading eigenvalue estimates.

Running it again resumes the same run directory and finishes at once; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="prepare Fashion-MNIST and train a small model on it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=FASHION_MNIST,
                   help=f"Fashion-MNIST IDX folder or an ImageFolder tree (default {FASHION_MNIST})")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="data and run go here")
    p.add_argument("--max-steps", type=int, default=150, help="training steps (default 150)")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run first")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides")
    p.add_argument("--json", default=None, metavar="PATH", help="write the run summary here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from launch.cli import main as eigenmap

    if not args.src.exists():
        print(f"eigenmap demo: error: '{args.src}' does not exist; install Debian's dataset-fashion-mnist "
              "(`make setup` does) or pass --src with an ImageFolder tree", file=sys.stderr)
        return 2
    beton = args.out_dir / "data" / f"{args.src.name}.beton"
    if not beton.is_file():
        rc = eigenmap(["prepare", str(args.src), str(beton)])
        if rc:
            return rc
    run_dir = args.out_dir / "run"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    summary_path = Path(args.json) if args.json else args.out_dir / "summary.json"
    rc = eigenmap(["train", str(DEMO_CONFIG), f"data.train_path={beton}", f"train.run_dir={run_dir}",
                   f"train.max_steps={args.max_steps}", *args.overrides, "--json", str(summary_path)])
    if rc == 0:
        _report(run_dir.resolve(), json.loads(summary_path.read_text()))
    return rc


def _report(run_dir: Path, summary: dict) -> None:
    """Print what the run measured: loss trajectory and the eigenvalue spectrum."""
    from eigenmap.run_dir import load_run

    logged = [json.loads(line) for line in open(run_dir / "metrics.jsonl")] if (run_dir / "metrics.jsonl").is_file() else []
    print(f"\ndemo run: {run_dir} ({summary.get('step')} steps, {summary.get('wall_seconds', 0):.0f} s)")
    if logged:
        first, last = logged[0], logged[-1]
        for key in ("total", "loss", "reg"):
            print(f"  {key:>5}  step {first['step']}: {first[key]:10.3f}   step {last['step']}: {last[key]:10.3f}")
        print(f"  {last.get('images_per_sec', float('nan')):.0f} images/s over all workers at the last log step")
    weights = summary.get("weights", {})
    if "model.pt" in weights:
        stats = load_run(run_dir).model.statistics()
        if stats is not None:
            top = ", ".join(f"{v:.3f}" for v in stats.eigenvalues[:8].tolist())
            print(f"  eigenvalue estimates, first 8 of {stats.eigenvalues.numel()}: {top}")
    print(f"  TensorBoard: tensorboard --logdir {run_dir}")
    print(f"  encoder weights (torchvision state dict): {weights.get('encoder.pt', '(not exported)')}")
