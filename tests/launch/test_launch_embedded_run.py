"""One `eigenmap train` on the embedded cluster, as a user runs it: what it exposes and prints.

- every listening socket of every process of the run is on loopback: Ray's processes AND the
  training process group (whose store Ray Train would bind to all interfaces);
- the console shows each line once: no warning repeated every second for the whole run.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import re
import time

import psutil
import pytest

from launch_helpers import LAUNCH_CONFIG, eigenmap_train

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _listening(root_pid: int) -> dict[tuple[int, str], set[str]]:
    """(pid, process title) -> the addresses it listens on, for a process and all it started."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[tuple[int, str], set[str]] = {}
    for p in procs:
        try:
            title = " ".join(p.cmdline())[:80] or p.name()
            addresses = {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
        if addresses:
            out[(p.pid, title)] = addresses
    return out


@pytest.fixture(scope="module")
def embedded_run(small_beton, tmp_path_factory) -> dict:
    """Runs 40 steps of 2 workers on the default embedded cluster, sampling the sockets of the
    run's processes while it trains. Returns the run dir, its console output and the sockets."""
    tmp = tmp_path_factory.mktemp("embedded")
    config, run_dir, log = tmp / "launch.yaml", tmp / "run", tmp / "console.log"
    config.write_text(LAUNCH_CONFIG)
    proc = eigenmap_train(str(config), f"data.train_path={small_beton}", f"train.run_dir={run_dir}",
                          "train.max_steps=40", "train.epochs=8", "train.log_every_steps=1", log=log,
                          user_console=True)
    seen: dict[tuple[int, str], set[str]] = {}
    samples = 0
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and samples < 5:
            metrics = run_dir / "metrics.jsonl"
            if metrics.is_file() and metrics.read_text().strip():  # training: the process group exists
                for key, addresses in _listening(proc.pid).items():
                    seen.setdefault(key, set()).update(addresses)
                samples += 1
            time.sleep(0.5)
    finally:
        proc.wait(timeout=300)
    console = log.read_text()
    assert proc.returncode == 0, console[-3000:]
    assert samples, "training never started: " + console[-3000:]
    return {"run_dir": run_dir, "console": console, "listening": seen}


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1, a dual-stack socket's form
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_listening_socket_of_an_embedded_run_is_on_loopback(embedded_run):
    seen, run_dir = embedded_run["listening"], embedded_run["run_dir"]
    ranks = {json.loads((run_dir / "workers" / f"rank{r}.json").read_text())["pid"] for r in (0, 1)}
    # the workers themselves were looked at: each listens (gloo's pairs, rank 0's store, Ray's gRPC)
    assert ranks <= {pid for pid, _ in seen}, (ranks, sorted(seen))
    outside = {key: sorted(a for a in addresses if not _is_loopback(a)) for key, addresses in seen.items()}
    outside = {key: addresses for key, addresses in outside.items() if addresses}
    assert not outside, f"listening beyond loopback: {outside}"


def test_the_console_shows_each_line_once_per_process_at_most(embedded_run):
    """Ray prefixes a worker's lines with "(ActorName pid=N)"; without that prefix, a line that a
    one-off message prints in each of the 2 workers may appear twice, nothing more often."""
    prefix = re.compile(r"^(\x1b\[[0-9;]*m)?\((\w+) pid=\d+(, ip=[^)]*)?\)(\x1b\[[0-9;]*m)?\s*")
    lines = [prefix.sub("", re.sub(r"\x1b\[[0-9;]*m", "", line)).strip()
             for line in embedded_run["console"].splitlines()]
    counts = collections.Counter(line for line in lines if line)
    repeated = {line: n for line, n in counts.items() if n > 2}
    assert not repeated, f"lines repeated on the console: {repeated}"
    progress = [line for line in lines if line.startswith("train: step ")]
    assert len(progress) == 40 and progress[-1].startswith("train: step 40/40"), progress[-3:]
