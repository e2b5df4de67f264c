"""Fixtures of the launcher tests (the helpers are in launch_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launch_helpers import LAUNCH_CONFIG, two_node_cluster

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session", autouse=True)
def ray_auth_token(tmp_path_factory):
    """Ray's token authentication with a token of this session (never ~/.ray/auth_token)."""
    import uuid

    path = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    path.write_text(uuid.uuid4().hex)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(path))
    yield path
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def launch_config(tmp_path: Path) -> Path:
    """2 workers x 1 CPU, ResNet-18 at 32 px, k = 64, 16 images per worker (160 images: 5 steps/epoch)."""
    path = tmp_path / "launch.yaml"
    path.write_text(LAUNCH_CONFIG)
    return path


@pytest.fixture(scope="session")
def ray_two_nodes():
    """A simulated two-node Ray cluster on 127.0.0.1 (one CPU per node); yields its address."""
    with two_node_cluster() as address:
        yield address
