"""``eigenmap config CONFIG [key=value ...]``: the resolved config ``eigenmap train`` would run.

It loads, resolves and checks the config exactly as ``train`` does (the same function,
``load_train_config``: the training data is read for its image count), prints it as YAML,
``derived`` section included (global batch, peak lr, steps per epoch, the planned total and
warm-up steps), with the plan in words above it, and starts nothing. A config ``train`` would
refuse is refused here with the same message (exit 2), except a recipe whose training data is
not prepared yet: it is printed with its data-dependent plan marked unknown.

``eigenmap config --keys`` lists every key of the schema with its type, limits, default and help.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("config", help="print the resolved config a training run would use (starts nothing)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n  eigenmap config configs/demo.yaml train.max_steps=150\n"
                                     "  eigenmap config --keys | grep warmup")
    p.add_argument("config", nargs="?", default=None, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, as `eigenmap train` takes them (optional)")
    p.add_argument("--keys", action="store_true", help="list every key with its type, default and help, and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.keys:
        if args.config is not None:
            print("eigenmap config: error: --keys lists the schema's keys and takes no CONFIG; run "
                  "`eigenmap config CONFIG` for a config's values", file=sys.stderr)
            return 2
        print(keys_listing())
        return 0
    if args.config is None:
        print("eigenmap config: error: pass a YAML config (e.g. configs/demo.yaml), or --keys for the list of keys",
              file=sys.stderr)
        return 2
    from eigenmap.config import ConfigError, to_yaml

    try:
        cfg, plan_words = _resolved_with_plan(args.config, args.overrides)
    except ConfigError as e:
        print(f"eigenmap config: error: {e}", file=sys.stderr)
        return 2
    plan = textwrap.wrap(plan_words, width=98)
    print(f"# `eigenmap train {' '.join([args.config, *args.overrides])}` would run this resolved config "
          "(nothing was started).")
    print("\n".join(f"# {line}" for line in plan))
    print(to_yaml(cfg), end="")
    return 0


def _resolved_with_plan(path: str, overrides: list[str]):
    """The config ``train`` would run and its plan in words. A recipe whose training data is not
    prepared yet (``data.train_path`` names no file so far) is still shown, its data-dependent
    plan marked unknown (``derived.train_images``, ``steps_per_epoch``, ``total_steps`` and
    ``warmup_steps`` null); ``train`` itself refuses it until the file exists.

    Raises:
        ConfigError: what ``train`` would refuse, but for the missing data file.
    """
    from eigenmap.config import load_config
    from eigenmap.data.synthetic import SYNTHETIC
    from eigenmap.train.checks import load_train_config, prepare_train_config
    from eigenmap.train.schedule import plan_in_words

    data = load_config(path, overrides).data.train_path
    if not data or data == SYNTHETIC or Path(data).expanduser().exists():
        cfg = load_train_config(path, overrides)
        return cfg, f"the plan: {plan_in_words(cfg)}."
    cfg = prepare_train_config(load_config(path, overrides), check_paths=False)
    return cfg, (f"the plan: unknown until data.train_path '{cfg.data.train_path}' is prepared (it does not exist "
                 "yet; write it with `eigenmap prepare SRC OUT.beton`): steps per epoch, total and warm-up steps "
                 "depend on its image count (derived.* null below); `eigenmap train` refuses it until then. "
                 f"Known now: a global batch of {cfg.derived.global_batch_size} and the peak lr {cfg.derived.lr:.4g}.")


def keys_listing() -> str:
    """Every key of the schema: ``key  type  (default: value)`` and its help, indented below."""
    from eigenmap.config import describe_keys

    lines = ["Every config key (YAML section.key, or a key=value override). derived.* are computed by "
             "`eigenmap config` / `train`, never set by hand.", ""]
    for d in describe_keys():
        lines.append(f"{d.key}  ({d.type}; default: {_shown(d.default)})")
        lines += [f"    {line}" for line in textwrap.wrap(d.help, width=94)]
    return "\n".join(lines)


def _shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)
