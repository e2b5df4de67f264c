"""Helpers of the training tests: the plain worker process, as a user or a GPU check runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TINY_CONFIG = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 64, projector_out_dim: 64, num_classes: 10}
loss: {alpha: 0.01}
optim: {name: lars, base_lr: 0.3, warmup_epochs: 1}
data: {resolution: 32, eval_resize: 32, batch_size_per_worker: 16, loader_workers: 1, synthetic_images: 256}
dist: {num_workers: 1, cpus_per_worker: 1, zero_stage: 0, max_failures: 0}
train: {epochs: 2, log_every_steps: 2, checkpoint_every_steps: 4, keep_checkpoints: 2, progress_bar: false}
"""


def worker_command(config: Path, *args: str, processes: int = 1) -> list[str]:
    """The plain worker; with ``processes`` > 1, that many under torchrun (on loopback)."""
    if processes == 1:
        return [sys.executable, "-m", "eigenmap.train.worker", str(config), *args]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={processes}",
            "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "eigenmap.train.worker", str(config), *args]


def worker_env() -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def run_worker(config: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m eigenmap.train.worker CONFIG ARGS`` to its end (or ``timeout`` seconds)."""
    return subprocess.run(worker_command(config, *args), cwd=REPO, env=worker_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_worker(config: Path, *args: str, log: Path, processes: int = 1) -> subprocess.Popen:
    """The same, running: its output goes to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(worker_command(config, *args, processes=processes), cwd=REPO, env=worker_env(),
                                stdout=out, stderr=subprocess.STDOUT, text=True)
