"""Where an evaluation's report goes, and how it is written: never over another pair's report,
never half-written.

A report names its inputs (``inputs``: each role's path and content id). A folder that already
holds a report of other inputs is not overwritten unless asked; a report is written into a
temporary folder beside its place and renamed there when complete, so an interrupted command
leaves the previous report (or none), never a mixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

from eigenmap.durable import publish

__all__ = ["ReportError", "check_report_folder", "publish_report", "input_ids", "finished_report"]


class ReportError(ValueError):
    """A report folder holds a report of other inputs."""


def input_ids(inputs: dict) -> dict:
    """``{role: content id}`` of a report's ``inputs`` (roles without an id left out)."""
    return {role: value["id"] for role, value in inputs.items() if isinstance(value, dict) and "id" in value}


def check_report_folder(folder: Path, report_file: str, inputs: dict, *, overwrite: bool, out_flag: str,
                        lost: Optional[Callable[[dict], list[str]]] = None) -> None:
    """Refuse ``folder`` when its ``report_file`` was made from other inputs, or measured more
    than this request would (unless ``overwrite``).

    Args:
        folder: where the report would go.
        report_file: the report's JSON file name in it (its ``inputs`` are compared).
        inputs: this evaluation's inputs (``{role: {"path", "id", ...}}``).
        overwrite: replace such a report anyway.
        out_flag: the option that picks another folder, for the message (e.g. ``--out``).
        lost: ``lost(report) -> [what the report there measured that this request would not]``
            (e.g. "the lengths 4, 8", "the baselines"); a non-empty answer refuses.

    Raises:
        ReportError: naming the folder, the inputs of the report there (or what would be lost),
            and what to do.
    """
    existing = folder / report_file
    if overwrite or not existing.is_file():
        return
    try:
        report = json.loads(existing.read_text())
    except (OSError, ValueError):
        report = {}
    old = report.get("inputs") or {}
    before, now = input_ids(old), input_ids(inputs)
    if before == now:  # the same evaluation again: brought up to date, unless that narrows it
        narrower = lost(report) if lost is not None else []
        if narrower:
            raise ReportError(f"'{existing}' holds a fuller report of the same inputs: it measured "
                              f"{' and '.join(narrower)}, which this request would not; it is kept. Pass --overwrite "
                              f"to replace it with the narrower one, or {out_flag} DIR to write this one elsewhere")
        return
    listing = "; ".join(f"{role} {old[role].get('path')} ({old[role].get('id', '?')[:23]}...)" for role in before)
    raise ReportError(f"'{existing}' holds a report of other inputs ({listing or 'inputs not recorded'}); it is kept. "
                      f"Pass {out_flag} DIR to write this one elsewhere, or --overwrite to replace it")


def finished_report(folder: Path, report_file: str, inputs: dict, request: dict) -> Optional[dict]:
    """The report in ``folder`` when it was made from the same inputs (content ids) with the same
    ``request`` (the weights' checksum and every setting the figures depend on), else None: a
    rerun of a finished evaluation reuses it rather than computing it again."""
    try:
        old = json.loads((Path(folder) / report_file).read_text())
    except (OSError, ValueError):
        return None
    if old.get("request") != request or input_ids(old.get("inputs") or {}) != input_ids(inputs):
        return None
    return old


def publish_report(folder: Path, write: Callable[[Path], Optional[dict]]) -> Optional[dict]:
    """Run ``write(tmp)`` into a temporary folder beside ``folder``, then replace ``folder``
    with it (the old report stays until the new one is complete). Returns what ``write`` returned."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result = write(tmp)
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        publish(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
