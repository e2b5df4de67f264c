"""``eigenmap config``: the resolved config a training run would use, shown before any launch."""

from __future__ import annotations

import subprocess
import sys

import yaml

from launch_helpers import REPO, cli_env

CHECK = ("import sys\n"
         "from launch.cli import main\n"
         "rc = main(sys.argv[1:])\n"
         "assert 'ray' not in sys.modules and 'deepspeed' not in sys.modules, "
         "'started too much'\n"
         "sys.exit(rc)\n")


def _eigenmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK, *args], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=120)


def test_config_prints_the_resolved_config_with_its_plan_and_starts_nothing(launch_config, tmp_path):
    run_dir = tmp_path / "run"
    proc = _eigenmap("config", str(launch_config), "data.train_path=synthetic", "data.synthetic_images=480",
                     f"train.run_dir={run_dir}", "train.epochs=100", "optim.warmup_epochs=10", "train.max_steps=150")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    # 480 images over 2 workers x 16: 15 steps per epoch; max_steps plans 150, the warm-up keeps its 10%
    lr = printed["optim"]["lr"] or printed["optim"]["base_lr"] * 32 / 256
    assert printed["derived"] == {"global_batch_size": 32, "lr": lr, "train_images": 480, "steps_per_epoch": 15,
                                  "total_steps": 150, "warmup_steps": 15}
    assert printed["train"]["max_steps"] == 150 and printed["train"]["run_dir"] == str(run_dir)
    assert "the plan: 150 optimiser steps (train.max_steps; 10 epochs of 15 steps" in " ".join(proc.stdout.split())
    assert not run_dir.exists()


def test_config_refuses_what_train_would_refuse_with_the_same_message(launch_config, tmp_path):
    proc = _eigenmap("config", str(launch_config), "model.depth=50")
    assert proc.returncode == 2 and "unknown config key 'model.depth'" in proc.stderr
    proc = _eigenmap("config", str(launch_config), "data.train_path=/nonexistent/train.beton", "optim.name=lars",
                     "dist.zero_stage=1")
    assert proc.returncode == 2 and "'optim.name' (lars) and 'dist.zero_stage' (1)" in proc.stderr
    proc = _eigenmap("config")
    assert proc.returncode == 2 and "--keys" in proc.stderr


def test_config_of_a_recipe_whose_data_is_not_prepared_prints_it_with_the_plan_unknown(launch_config):
    proc = _eigenmap("config", str(launch_config), "data.train_path=/nonexistent/train.beton")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed["data"]["train_path"] == "/nonexistent/train.beton"
    assert printed["derived"]["global_batch_size"] == 32 and printed["derived"]["lr"] is not None
    assert [printed["derived"][k] for k in ("train_images", "steps_per_epoch", "total_steps", "warmup_steps")] == \
        [None] * 4
    assert "the plan: unknown until data.train_path '/nonexistent/train.beton' is prepared" in \
        " ".join(line.lstrip("# ") for line in proc.stdout.splitlines())


def test_config_keys_lists_every_key_with_its_type_default_and_help():
    from eigenmap.config import describe_keys

    proc = _eigenmap("config", "--keys")
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = describe_keys()
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line and not line.startswith((" ", "Every"))]
    assert listed == [d.key for d in keys] and "loss.alpha_final" in listed and "data.view2.solarize_prob" in listed
    assert "train.max_steps  (int or null, >= 1; default: null)" in proc.stdout
    assert "optim.warmup_epochs  (float, >= 0.0; default: 10.0)" in proc.stdout
    assert "derived.total_steps" in proc.stdout and "the planned length in optimiser steps" in proc.stdout


def test_config_keys_prints_for_every_key_the_default_a_config_gets():
    """Each printed default is the value of a config built from no keys at all (resolved: the
    derived keys stay null, computed only from a run's data), read key by key."""
    import operator

    from eigenmap.config import describe_keys, load_config, resolve
    from launch.cmd_config import _shown

    proc = _eigenmap("config", "--keys")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = dict(line.split("  ", 1) for line in proc.stdout.splitlines()
                   if line and not line.startswith((" ", "Every")))
    plain, resolved = load_config(), resolve(load_config())
    keys = [d.key for d in describe_keys()]
    assert sorted(printed) == sorted(keys) and len(keys) > 80
    wrong = {}
    for key in keys:
        value = operator.attrgetter(key)(plain if key.startswith("derived.") else resolved)
        shown = printed[key].rsplit("default: ", 1)[1].removesuffix(")")
        if shown != _shown(value):
            wrong[key] = (shown, _shown(value))
    assert not wrong, f"printed default vs the config's value: {wrong}"
    assert "data.view2.blur_prob  (float, >= 0.0 and <= 1.0; default: 0.1)" in proc.stdout


def test_train_without_arguments_asks_for_the_config_alone_and_points_to_eigenmap_config():
    proc = _eigenmap("train")
    assert proc.returncode == 2
    assert "the following arguments are required: config\n" in proc.stderr and "[key=value ...]" in proc.stderr
    help_text = _eigenmap("train", "--help").stdout
    assert "eigenmap config CONFIG [key=value ...]" in help_text and "eigenmap config --keys" in help_text
