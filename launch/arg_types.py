"""argparse types shared by the subcommands: a bad number is a one-line error naming the flag."""

from __future__ import annotations

import argparse

__all__ = ["int_at_least"]


def int_at_least(name: str, minimum: int):
    """An argparse ``type``: an integer >= ``minimum``, else an error naming ``name``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value
    return parse
