"""The manifest's record of its file (size, SHA-256, image count) and the checks built on it:
the cheap pre-flight before training and ``eigenmap prepare --verify``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from eigenmap.data import read_manifest
from eigenmap.data.beton_check import beton_num_samples, beton_problems
from eigenmap.data.manifest import manifest_path


@pytest.fixture()
def beton(subset_beton: Path, tmp_path: Path) -> Path:
    """A copy of a file our writer wrote, with its manifest, free to damage."""
    out = tmp_path / "copy.beton"
    shutil.copy(subset_beton, out)
    shutil.copy(manifest_path(subset_beton), manifest_path(out))
    return out


def test_the_manifest_records_the_files_size_checksum_and_image_count(beton):
    from ffcv.reader import Reader

    manifest = read_manifest(beton)
    assert manifest["bytes"] == beton.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(beton.read_bytes()).hexdigest()
    # the launcher reads the header without importing FFCV: the same count as FFCV's reader
    assert beton_num_samples(beton) == int(Reader(str(beton)).num_samples) == manifest["num_images"]
    assert beton_problems(beton, checksum=True) == []


def test_a_truncated_file_is_found_by_its_size(beton):
    size = beton.stat().st_size
    with open(beton, "r+b") as f:
        f.truncate(size - 1000)
    (problem, *_) = beton_problems(beton)
    assert f"has {size - 1000} bytes but its manifest records {size}" in problem
    assert f"eigenmap prepare --verify {beton}" in problem
    manifest_path(beton).unlink()  # a file written by FFCV directly has no manifest: its header tells
    assert "allocation table" in beton_problems(beton)[0]


def test_a_zero_byte_file_is_refused_with_or_without_a_manifest(beton):
    beton.write_bytes(b"")
    assert "is empty (0 bytes)" in beton_problems(beton)[0]
    manifest_path(beton).unlink()
    assert "is empty (0 bytes)" in beton_problems(beton)[0]


def test_a_manifest_beside_another_file_is_found_by_the_image_count(beton):
    manifest = json.loads(manifest_path(beton).read_text())
    manifest["num_images"] += 1
    manifest_path(beton).write_text(json.dumps(manifest))
    assert any("its manifest records" in p and "do not belong together" in p for p in beton_problems(beton))


def test_prepare_verify_checks_every_byte(beton, capsys):
    from launch.cli import main

    assert main(["prepare", "--verify", str(beton)]) == 0
    assert "OK" in capsys.readouterr().out
    data = bytearray(beton.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage of the same size: only the checksum sees it
    beton.write_bytes(bytes(data))
    assert beton_problems(beton) == []
    assert main(["prepare", "--verify", str(beton)]) == 1
    assert "does not match its manifest's checksum" in capsys.readouterr().err
    assert main(["prepare", "--verify", str(beton.with_name("missing.beton"))]) == 2
    manifest_path(beton).unlink()
    assert main(["prepare", "--verify", str(beton)]) == 2
    assert "no manifest with a checksum" in capsys.readouterr().err
