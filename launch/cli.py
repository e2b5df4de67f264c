"""The ``eigenmap`` command: one entry, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its parser and sets
``func``) and is imported lazily, so ``eigenmap --help`` does not import torch, Ray or FFCV.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from eigenmap.host_memory import keep_freed_memory

# name -> module under launch/ that implements it
SUBCOMMANDS = {
    "prepare": "launch.cmd_prepare",
    "config": "launch.cmd_config",
    "train": "launch.cmd_train",
    "export": "launch.cmd_export",
    "extract": "launch.cmd_extract",
    "probe": "launch.cmd_probe",
    "retrieve": "launch.cmd_retrieve",
    "report": "launch.cmd_report",
    "demo": "launch.cmd_demo",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eigenmap",
        description="Neural Eigenmaps: prepare data, train, evaluate and benchmark retrieval.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, module in SUBCOMMANDS.items():
        if wanted is not None and name != wanted:
            # only the chosen subcommand's module is imported; the others get a help line
            sub.add_parser(name, help=f"see `eigenmap {name} --help`")
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # FAISS logs each instruction-set variant it could not load (AVX-512, AVX2...) at INFO
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    args = build_parser(argv).parse_args(argv)
    try:
        keep_freed_memory()  # every subcommand's CPU work (decode, forward, probe) reuses its large buffers
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
