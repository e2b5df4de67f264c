"""The training process group of an embedded (single-machine) Ray cluster, on loopback only.

Ray Train's own set-up (``TorchConfig``) creates the group with ``init_method="env://"``:
rank 0's TCPStore server then listens on every interface (``[::]:PORT``), and gloo binds to
the address the host name resolves to. On one machine nothing needs to be reachable from
outside, so here:

- rank 0 binds the store's socket to 127.0.0.1 itself and hands its descriptor to the
  TCPStore server (``master_listen_fd``); the other ranks connect to 127.0.0.1;
- gloo and NCCL bootstrap on the loopback interface (``GLOO_SOCKET_IFNAME`` /
  ``NCCL_SOCKET_IFNAME``).

A multi-node cluster (``dist.address`` set) keeps Ray's own set-up: its ranks must reach each
other across machines (see launch/examples/README.md for the ports it opens).
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Optional

import psutil
import ray
import torch.distributed as tdist
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

__all__ = ["LoopbackTorchConfig", "loopback_interface"]

# rank 0's listening socket between _bind_store_socket and _join_group (the store then owns it)
_STORE_SOCKET: Optional[socket.socket] = None


def loopback_interface() -> str:
    """The name of the network interface that holds 127.0.0.1 (``lo`` on Linux)."""
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addresses):
            return name
    raise RuntimeError("no network interface has the address 127.0.0.1; an embedded cluster needs loopback")


def _bind_store_socket() -> int:
    """In rank 0: a listening TCP socket on 127.0.0.1 at a free port; returns the port."""
    global _STORE_SOCKET
    if _STORE_SOCKET is not None:
        _STORE_SOCKET.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    _STORE_SOCKET = sock
    return sock.getsockname()[1]


def _join_group(backend: str, rank: int, world_size: int, port: int, timeout_s: int) -> None:
    """In every rank: the default process group over a loopback TCPStore."""
    global _STORE_SOCKET
    interface = loopback_interface()
    os.environ["GLOO_SOCKET_IFNAME"] = interface  # gloo's pairs listen on loopback
    os.environ["NCCL_SOCKET_IFNAME"] = interface  # and NCCL's bootstrap
    timeout = datetime.timedelta(seconds=timeout_s)
    if rank == 0:
        assert _STORE_SOCKET is not None, "rank 0 must bind the store socket first"
        # the store's server closes the descriptor when it ends: detach it from Python's object
        fd, _STORE_SOCKET = _STORE_SOCKET.detach(), None
        store = tdist.TCPStore("127.0.0.1", port, world_size, is_master=True, timeout=timeout,
                               master_listen_fd=fd, wait_for_workers=False)
    else:
        store = tdist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    tdist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class _LoopbackTorchBackend(_TorchBackend):
    """Ray Train's torch backend, with the process group made by :func:`_join_group`."""

    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        backend = backend_config.backend or "gloo"
        port = worker_group.execute_single(0, _bind_store_socket)
        worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK, ... as torchrun sets
        ray.get([worker_group.execute_single_async(rank, _join_group, backend, rank, len(worker_group), port,
                                                   backend_config.timeout_s)
                 for rank in range(len(worker_group))])


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group listens on 127.0.0.1 only (single machine)."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
