"""Helpers of the launcher tests: a simulated two-node Ray cluster and the CLI.

Ray is bound to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray advertises and listens
on loopback only), uses its own temp dir and free ports, and every process a fixture starts is
stopped by its own id at teardown (never ``ray stop``, which would stop every Ray on the host).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

os.environ.setdefault("DS_ACCELERATOR", "cpu")


LAUNCH_CONFIG = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 64, projector_out_dim: 64, num_classes: 10}
loss: {alpha: 0.01}
optim: {name: sgd, lr: 0.5, warmup_epochs: 0.5}
data: {resolution: 32, eval_resize: 32, batch_size_per_worker: 16, loader_workers: 1}
dist: {num_workers: 2, cpus_per_worker: 1, zero_stage: 0, max_failures: 0}
train: {epochs: 4, log_every_steps: 1, checkpoint_every_steps: 4, keep_checkpoints: 2, progress_bar: true}
"""


# a 10-step ResNet-18 run on 160 images, one plain worker: the evaluation tests' trained run
TINY_RUN = """\
model: {arch: resnet18, small_image_stem: false, projector_hidden_dim: 64, projector_out_dim: 64, num_classes: 10}
loss: {alpha: 0.01}
optim: {name: lars, base_lr: 0.3, warmup_epochs: 1}
data: {resolution: 32, eval_resize: 36, batch_size_per_worker: 16, loader_workers: 1}
dist: {num_workers: 1, cpus_per_worker: 1, zero_stage: 0, max_failures: 0}
train: {epochs: 1, log_every_steps: 5, checkpoint_every_steps: 100, keep_checkpoints: 1, progress_bar: false}
eval: {probe_epochs: 3, probe_batch_size: 32}
"""


def cli_env() -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}


def eigenmap_train(*args: str, timeout: float = 300, log: Path | None = None, user_console: bool = False):
    """``eigenmap train ...`` as a subprocess (a user's command line).

    Waits and returns the CompletedProcess; with ``log``, returns the running Popen at once,
    its output going to that file. ``user_console``: Ray's log de-duplication as a user has it
    (the other tests turn it off to see every worker's lines).
    """
    cmd = [sys.executable, "-m", "launch.cli", "train", *args]
    env = cli_env()
    if user_console:
        env.pop("RAY_DEDUP_LOGS")
    if log is not None:
        with open(log, "w") as out:
            return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def run_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` (none before the first step is logged)."""
    import json

    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest ``RUN/checkpoints/step_*`` folder."""
    return max((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen], grace_seconds: float = 5.0) -> None:
    """Stop the ``ray start --block`` processes we started, and everything they started.

    SIGTERM asks each to stop its Ray processes (a worker node drains for up to 30 s); after
    ``grace_seconds`` the rest of each one's own process group (start_new_session) is killed.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + grace_seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextlib.contextmanager
def two_node_cluster():
    """``ray start --head`` and a second ``ray start --address`` on 127.0.0.1, one CPU each.

    Yields the head's ``host:port``. A 2-worker job with 1 CPU per worker must place one worker
    on each node.
    """
    import tempfile

    # a short root: Ray's unix socket paths must stay under ~107 characters
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port = _free_port()
    env = cli_env()
    ray = str(VENV_BIN / "ray")
    def common() -> list[str]:  # each node its own agent port: both share this host
        return ["--block", "--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={_free_port()}"]

    procs = []
    try:
        head = subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
             f"--ray-client-server-port={_free_port()}", *common()],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(head)
        _wait_for_port(port, head)
        node = subprocess.Popen([ray, "start", f"--address=127.0.0.1:{port}", *common()], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(node)
        _wait_for_nodes(f"127.0.0.1:{port}", 2, env)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(list(reversed(procs)))
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"Ray head did not listen on 127.0.0.1:{port} within {seconds} s")


def _wait_for_nodes(address: str, count: int, env: dict, seconds: float = 90) -> None:
    probe = ("import ray, sys, time\n"
             f"ray.init(address='{address}', logging_level='ERROR')\n"
             f"deadline = time.time() + {seconds}\n"
             f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() < deadline: time.sleep(0.5)\n"
             f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= {count} else 1)\n")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          timeout=seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"the simulated cluster did not reach {count} nodes: {proc.stderr[-2000:]}")


def eigenmap(*args: str, timeout: float = 300):
    """``eigenmap ARGS`` as a user types it (a subprocess of the CLI); the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
