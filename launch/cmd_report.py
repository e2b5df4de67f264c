"""``eigenmap report RUN``: (re)write ``RUN/report/report.md`` and its plots from the run's files.

Config summary; training curves and the eigenvalue spectrum (PNG); linear probe and kNN
(``eigenmap probe``); the retrieval table and plots (``eigenmap retrieve``); device, backend and
wall times; where the TensorBoard logs are. Parts not run yet are named with the command that
makes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="write the run report (markdown + plots) from a run directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory (train.run_dir)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eigenmap.run import RunDir
    from launch.report import write_run_report

    if not RunDir(args.run).config.is_file():
        print(f"eigenmap report: error: '{args.run}' is not a run directory (no config.yaml); pass the "
              "train.run_dir of a run", file=sys.stderr)
        return 2
    path = write_run_report(args.run)
    print(f"report: {path}")
    return 0
