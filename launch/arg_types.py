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


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def memory_size(name: str):
    """An argparse ``type``: a size in bytes, written ``4GiB``, ``512MiB``, ``2G`` or ``1000000``."""
    def parse(text: str) -> int:
        digits = text.strip().lower().rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = text.strip().lower()[len(digits):].strip()
        try:
            value = float(digits) * _UNITS[unit]
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(f"{name} must be a size such as 4GiB, 512MiB or 1000000 (bytes), got "
                                             f"{text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1 byte, got {text!r}")
        return int(value)
    return parse
