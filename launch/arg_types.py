"""argparse types shared by the subcommands: a bad number is a one-line error naming the flag."""

from __future__ import annotations

import argparse

__all__ = ["int_at_least", "memory_size"]


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


def memory_size(name: str):
    """An argparse ``type``: a size in bytes, written ``4GiB``, ``512MiB``, ``2GB`` or ``1000000``
    (binary units with i, decimal without: :func:`retrieval.settings.parse_bytes`)."""
    def parse(text: str) -> int:
        from retrieval.settings import parse_bytes

        try:
            return parse_bytes(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{name}: {e}") from None
    return parse
