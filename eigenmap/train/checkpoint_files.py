"""Which checkpoint is whole, and which one a run resumes from.

Each checkpoint directory lists its files with their sizes and SHA-256 (``files.json``, or
``files_rank{r}.json`` per rank where every rank's part is uploaded on its own, as under Ray),
written once its files are complete and before it is published. :func:`is_complete` checks
the sizes (a ``stat`` per file: cheap enough for every look at the run directory);
:func:`verify_checkpoint` with ``checksums`` reads every byte, which the run does once before
it resumes. A damaged checkpoint is passed over with a warning naming it, for the previous kept
one: a truncated file no longer fails every restart of a run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

from eigenmap import dist
from eigenmap.durable import atomic_write_text, describe_files, sha256_of

__all__ = ["CHECKPOINT_RE", "ENGINE_TAG", "checkpoint_step", "read_meta", "seal_checkpoint", "verify_checkpoint",
           "is_complete", "find_latest", "newest_good"]

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^step_(\d{8})$")
ENGINE_TAG = "engine"  # DeepSpeed's tag: the engine's files go to <checkpoint>/engine/
FILES_RE = re.compile(r"^files(_rank\d+)?\.json$")  # the checkpoint's own file lists


def read_meta(path: Path) -> dict:
    """A checkpoint's ``meta.json`` (counters, metrics, config, data identity)."""
    return json.loads((Path(path) / "meta.json").read_text())


def checkpoint_step(path: Path) -> Optional[int]:
    """The step in a ``step_XXXXXXXX`` directory name, None for other names."""
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def seal_checkpoint(path: Path, name: str = "files.json") -> None:
    """List every file under ``path`` (the lists excepted) with its size and SHA-256 in
    ``path/name``: once all ranks have written, before publication."""
    path = Path(path)
    listed = describe_files(path, exclude=tuple(p.name for p in path.iterdir() if FILES_RE.match(p.name)))
    atomic_write_text(path / name, json.dumps(listed, indent=1))


def verify_checkpoint(path: Path, *, checksums: bool) -> Optional[str]:
    """What is wrong with the checkpoint ``path``, or None when it is whole.

    Checks that the file lists exist, that every file is listed and has its listed size,
    that the counters, the engine state and each rank's RNG file are there, and with
    ``checksums`` that every file's SHA-256 matches (reads every byte).
    """
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    listed: dict[str, dict] = {}
    for lst in sorted(p for p in path.iterdir() if FILES_RE.match(p.name)):
        try:
            listed.update(json.loads(lst.read_text()))
        except (OSError, ValueError) as e:
            return f"{lst.name} is unreadable ({e})"
    if not listed:  # sealed before publication, so never finished: its parts cannot say they are whole
        return "no file list (files.json): the checkpoint was never sealed"
    present = {p.relative_to(path).as_posix() for p in path.rglob("*")
               if p.is_file() and not FILES_RE.match(p.name) and not p.name.startswith(".")}
    if present - set(listed):
        return f"files not in its file list: {sorted(present - set(listed))[:3]}"
    for rel, want in listed.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        size = f.stat().st_size
        if size != want["bytes"]:
            return f"{rel} has {size} bytes, {want['bytes']} were written (truncated?)"
    problem = _missing_parts(path)
    if problem or not checksums:
        return problem
    for rel, want in listed.items():
        if sha256_of(path / rel) != want["sha256"]:
            return f"{rel} does not match its checksum (damaged on disk)"
    return None


def _missing_parts(path: Path) -> Optional[str]:
    if not (path / "trainer_state.pt").is_file() or not (path / ENGINE_TAG).is_dir():
        return "no trainer_state.pt or engine state"
    try:
        world = read_meta(path)["world_size"]
    except (OSError, ValueError, KeyError):
        return "meta.json is missing or unreadable"
    missing = [r for r in range(world) if not (path / f"rng_rank{r}.pt").is_file()]
    return f"no RNG file of rank(s) {missing}" if missing else None


def is_complete(path: Path) -> bool:
    """Every file of the checkpoint is there with its written size (cheap: no checksums)."""
    return verify_checkpoint(path, checksums=False) is None


def find_latest(root: Path, *, checksums: bool = False, below: Optional[int] = None,
                warn: bool = True) -> Optional[Path]:
    """The checkpoint with the highest step under ``root`` (below step ``below`` if given) that
    passes :func:`verify_checkpoint`, or None. Skipped ones get a warning naming them
    (``warn``): a run that resumes from an older checkpoint says so."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = sorted((step, root / f"step_{step:08d}") for step in _steps_below(root, below))
    for _, p in reversed(found):
        problem = verify_checkpoint(p, checksums=checksums)
        if problem is None:
            return p
        if warn:
            _warn_unusable(p, problem)
    if warn and found:
        log.warning("no usable checkpoint left under %s: the run starts from step 0", root)
    return None


def _steps_below(root: Path, below: Optional[int]) -> list[int]:
    steps = [step for p in root.iterdir() if (step := checkpoint_step(p)) is not None] if root.is_dir() else []
    return [step for step in steps if below is None or step < below]


def _warn_unusable(path: Path, problem: str) -> None:
    log.warning("checkpoint %s is unusable (%s): passed over for the previous kept checkpoint", path, problem)


def newest_good(candidate: Optional[Path], root: Path) -> Optional[Path]:
    """The checkpoint to resume from, the same on every rank (collective).

    ``candidate``: the one the launcher hands over (Ray's latest, each rank its own copy) or
    None. Rank 0 verifies it with checksums, else (or when it is damaged: a warning names it)
    takes the newest good ``step_*`` under ``root`` older than it, and tells every rank.
    """
    verdict = None  # "candidate", a checkpoint under root, or None: start from step 0
    if dist.get_rank() == 0:
        problem = verify_checkpoint(candidate, checksums=True) if candidate is not None else None
        if candidate is not None and problem is None:
            verdict = "candidate"
        else:
            if problem is not None:
                _warn_unusable(candidate, problem)
            below = checkpoint_step(candidate) if candidate is not None else None
            older = find_latest(root, checksums=True, below=below)
            if older is None and problem is not None and not _steps_below(root, below):
                log.warning("no older checkpoint under %s: the run starts from step 0", root)
            verdict = str(older) if older is not None else None
    verdict = dist.broadcast_object(verdict)
    if verdict == "candidate":
        return candidate
    return Path(verdict) if verdict is not None else None
