"""``eigenmap train CONFIG.yaml [key=value ...]``: train on a Ray cluster.

The config is loaded, resolved and checked here (``load_train_config``), before Ray or any
worker starts, so a bad key, value or data path fails at once with a message naming it. Exit codes: 0 finished, 2 bad config or
arguments, 3 stopped on a non-finite loss, 1 the run failed (after Ray's restarts).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from eigenmap.config import ConfigError
from eigenmap.train.checks import load_train_config

log = logging.getLogger(__name__)

EPILOG = """examples:
  eigenmap train configs/demo.yaml
  eigenmap train configs/imagenette_resnet18.yaml data.train_path=/data/imagenette.beton dist.num_workers=2
  eigenmap train configs/imagenet_resnet50_100ep.yaml --address auto          # join a running cluster
  eigenmap train configs/demo.yaml data.train_path=synthetic train.max_steps=20 --json out.json
Running it again with the same train.run_dir resumes from the latest checkpoint."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an encoder (Ray TorchTrainer + DeepSpeed workers)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. dist.num_workers=2 train.run_dir=runs/x")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or host:port (default: the config's dist.address; "
                        "null there = an embedded local cluster on 127.0.0.1)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the run summary (figures) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"dist.address={args.address}"] if args.address is not None else [])
    try:
        cfg = load_train_config(args.config, overrides)
    except ConfigError as e:
        print(f"eigenmap train: error: {e}", file=sys.stderr)
        return 2
    from launch.ray_runner import run_on_ray

    log.info("run directory %s: %d workers x (%d CPU, %g GPU), global batch %d, lr %.4g",
             cfg.train.run_dir, cfg.dist.num_workers, cfg.dist.cpus_per_worker, cfg.dist.gpus_per_worker,
             cfg.derived.global_batch_size, cfg.derived.lr)
    summary = run_on_ray(cfg)
    summary["run_dir"] = cfg.train.run_dir
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    status = summary["status"]
    print(f"eigenmap train: {status}: {summary.get('message', '')} (run dir {cfg.train.run_dir}, "
          f"{summary['attempts']} worker-group start(s), {summary['wall_seconds']:.1f} s)",
          file=sys.stderr if status != "finished" else sys.stdout)
    return {"finished": 0, "nonfinite": 3}.get(status, 1)
