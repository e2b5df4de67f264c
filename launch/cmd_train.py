"""``eigenmap train CONFIG.yaml [key=value ...]``: train on a Ray cluster.

The config is loaded, resolved and checked here (``load_train_config``), before Ray or any
worker starts, so a bad key, value or data path fails at once with a message naming it. Then
the run directory is locked (one run at a time; a stale lock of a dead process is taken over)
and, when it holds a checkpoint, the resume rules apply: a changed batch, worker count, data,
model, loss, seed, optimiser or ZeRO stage is refused unless --allow-config-change.

Exit codes (docs/exit-codes.md): 0 finished, 1 the run failed (after Ray's restarts), 2 bad
config or arguments (a refused resume, a run directory in use included), 3 stopped on a
non-finite loss, 75 preempted (SIGTERM: a checkpoint was saved; EX_TEMPFAIL, which schedulers
read as "retry"), 130 interrupted (Ctrl-C: a checkpoint was saved; a second Ctrl-C aborts at
once and keeps the last one). After 75 and 130, run the same command again to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from eigenmap.train.checks import load_train_config
from eigenmap.train.exit_codes import exit_code
from eigenmap.train.preempt import INTERRUPTED
from eigenmap.train.resume import ALLOW_FLAG, ALLOW_HELP
from eigenmap.train.run_start import (OUTSIDE_TRAINING, REFUSALS, command_line, finished_run, report_end,
                                      starting_run)
from eigenmap.train.schedule import plural

log = logging.getLogger(__name__)

EPILOG = """Before launching: `eigenmap config CONFIG [key=value ...]` prints the resolved config this command
would run (derived values included: global batch, peak lr, steps per epoch, total and warm-up
steps) and starts nothing; `eigenmap config --keys` lists every key with its type, default and help.
train.max_steps is the planned length (warm-up, cosine and alpha ramp span it), as in Hugging Face's
Trainer.

examples:
  eigenmap train configs/demo.yaml
  eigenmap train configs/imagenette_resnet18.yaml data.train_path=/data/imagenette.beton dist.num_workers=2
  eigenmap train configs/imagenet_resnet50_100ep.yaml --address auto          # join a running cluster
  eigenmap train configs/demo.yaml data.train_path=synthetic train.max_steps=20 --json out.json
Running it again with the same train.run_dir resumes from the latest checkpoint (add
--allow-config-change to resume with another batch, worker count, data, model or loss); on a
finished run it says so in seconds and changes nothing.
SIGTERM (SLURM, Kubernetes, spot instances) saves a checkpoint and exits 75, Ctrl-C the same and
exits 130: run the same command again to resume. Weights of a kept checkpoint:
eigenmap export RUN_DIR [--step N]."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an encoder (Ray TorchTrainer + DeepSpeed workers)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides (optional), e.g. dist.num_workers=2 train.run_dir=runs/x; "
                        "`eigenmap config --keys` lists every key")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or host:port (default: the config's dist.address; "
                        "null there = an embedded local cluster on 127.0.0.1)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the run summary (figures) here")
    p.add_argument(ALLOW_FLAG, action="store_true", help=ALLOW_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"dist.address={args.address}"] if args.address is not None else [])
    cfg = None
    try:
        cfg = load_train_config(args.config, overrides)
        with starting_run(cfg, allow_config_change=args.allow_config_change):
            # a finished run is kept as it is, without starting Ray
            summary = finished_run(cfg) or _train(cfg, args.allow_config_change)
    except REFUSALS as e:
        print(f"eigenmap train: error: {e}", file=sys.stderr)
        return exit_code("refused")
    except KeyboardInterrupt:  # Ctrl-C while Ray starts or shuts down (run_on_ray handles the ones in training)
        summary = {"status": INTERRUPTED, "message": OUTSIDE_TRAINING}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    details = (f"run dir {cfg.train.run_dir}, {plural(summary['attempts'], 'worker-group start')}, "
               f"{summary['wall_seconds']:.1f} s" if "attempts" in summary else "")
    return report_end("eigenmap train", summary, run_dir=cfg.train.run_dir if cfg else None,
                      rerun=_rerun_command(args), details=details)


def _rerun_command(args: argparse.Namespace) -> str:
    """This command as the user typed it (the program as they called it, when it was `eigenmap`)."""
    prog = sys.argv[0] if os.path.basename(sys.argv[0]) == "eigenmap" else "eigenmap"
    return command_line(prog, "train", args.config, *args.overrides,
                        *(["--address", args.address] if args.address is not None else []),
                        *(["--json", args.json] if args.json else []),
                        *([ALLOW_FLAG] if args.allow_config_change else []))


def _train(cfg, allow_config_change: bool) -> dict:
    from launch.ray_runner import run_on_ray

    log.info("run directory %s: %d workers x (%d CPU, %g GPU), global batch %d, lr %.4g",
             cfg.train.run_dir, cfg.dist.num_workers, cfg.dist.cpus_per_worker, cfg.dist.gpus_per_worker,
             cfg.derived.global_batch_size, cfg.derived.lr)
    summary = run_on_ray(cfg, allow_config_change=allow_config_change)
    summary["run_dir"] = cfg.train.run_dir
    return summary
