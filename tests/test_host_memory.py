"""keep_freed_memory: large freed blocks are reused instead of faulted in again, with an opt-out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eigenmap.host_memory import OPT_OUT_VARIABLE, keep_freed_memory

REPO = Path(__file__).resolve().parents[1]

# a 64 MiB tensor (above glibc's 32 MiB mmap ceiling) made and freed ten times, after 16 times
# of warm-up: the heap needs a few before a freed block is large enough for torch's
# 64-byte-aligned request, which is the memory the setting costs
SCRIPT = """
import resource, torch
from eigenmap.host_memory import keep_freed_memory
applied = keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
    torch.ones(16 * 2**20)
before = faults()
for _ in range(10):
    torch.ones(16 * 2**20)
print(applied, (faults() - before) / 10)
"""


def _faults_per_allocation(opt_out: str | None) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT_VARIABLE}
    if opt_out is not None:
        env[OPT_OUT_VARIABLE] = opt_out
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    applied, faults = done.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_large_tensors_are_reused_without_page_faults_unless_opted_out():
    applied, kept = _faults_per_allocation(None)
    assert applied == "True" and kept < 4  # 16,384 pages of 4 KiB each, none faulted in again
    applied, default = _faults_per_allocation("0")
    # glibc's default maps each one anew: every page (or, with transparent huge pages, every 2 MiB)
    assert applied == "False" and default >= 16


def test_a_bad_opt_out_value_names_the_accepted_ones(monkeypatch):
    monkeypatch.setenv(OPT_OUT_VARIABLE, "yes")
    with pytest.raises(ValueError, match=r"EIGENMAP_KEEP_FREED_MEMORY='yes': use 1 .* or 0"):
        keep_freed_memory()
