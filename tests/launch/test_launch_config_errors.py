"""A bad config fails in the launcher, before Ray or any worker starts, naming the problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from launch_helpers import REPO, cli_env

CHECK = ("import sys\n"
         "from launch.cli import main\n"
         "rc = main(sys.argv[1:])\n"
         "assert 'ray' not in sys.modules and 'deepspeed' not in sys.modules, 'started too much'\n"
         "sys.exit(rc)\n")


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK, "train", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("overrides,message", [
    (["model.depth=50"], "unknown config key 'model.depth'"),
    (["data.batch_size_per_worker=big"], "config key 'data.batch_size_per_worker': got 'big'"),
    (["dist.zero_stage=4"], "config key 'dist.zero_stage': 4 is out of range"),
    (["data.train_path="], "config key 'data.train_path' is empty"),
    (["data.train_path=/nonexistent/train.beton"], "'/nonexistent/train.beton' does not exist"),
    (["data.train_path=configs"], "configs' is a folder; training reads a .beton: write one from an ImageFolder "
                                  "with `eigenmap prepare "),
    (["data.train_path=synthetic", "dist.zero_stage=2"], "LARS"),
    # timm's own TypeError would be a stack trace from inside timm: the config names the key instead
    (["model.arch=timm:vit_tiny_patch16_224", "model.timm_kwargs.img_size=32", "model.timm_kwargs.patchsize=4"],
     "config key 'model.timm_kwargs.patchsize': timm's vit_tiny_patch16_224 has no argument 'patchsize'"),
])
def test_bad_config_fails_before_any_worker_starts(launch_config, tmp_path, overrides, message):
    if "LARS" in message:
        overrides = [*overrides, "optim.name=lars"]
    proc = _train(str(launch_config), f"train.run_dir={tmp_path / 'run'}", *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_missing_config_file_is_named(tmp_path):
    proc = _train(str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml' does not exist" in proc.stderr


def test_a_bad_keep_freed_memory_value_fails_before_the_subcommand_runs(launch_config, tmp_path):
    env = {**cli_env(), "EIGENMAP_KEEP_FREED_MEMORY": "on"}
    proc = subprocess.run([sys.executable, "-c", CHECK, "train", str(launch_config),
                           f"train.run_dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "EIGENMAP_KEEP_FREED_MEMORY='on': use 1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
