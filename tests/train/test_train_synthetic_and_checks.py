"""The synthetic two-view source's contract, and the checks run before any worker starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eigenmap.config import ConfigError, from_dict, resolve
from eigenmap.data.synthetic import SyntheticTwoViewLoader
from eigenmap.train.checks import check_train_config, prepare_train_config


def test_synthetic_loader_has_the_training_loader_contract():
    cfg = from_dict({"data": {"resolution": 16, "eval_resize": 16, "batch_size_per_worker": 4,
                              "synthetic_images": 40}})
    loader = SyntheticTwoViewLoader(cfg.data, num_classes=10, rank=1, world_size=2, seed=3)
    assert len(loader) == 40 // (4 * 2)
    batches = list(loader)
    assert len(batches) == len(loader)
    v1, v2, labels = batches[0]
    assert v1.shape == v2.shape == (4, 3, 16, 16) and v1.dtype == v2.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.shape == (4,) and int(labels.max()) < 10
    loader.set_epoch(1, start_step=3)
    assert len(list(loader)) == len(loader) - 3
    again = SyntheticTwoViewLoader(cfg.data, num_classes=10, rank=1, world_size=2, seed=3)
    assert torch.equal(next(iter(again))[0], v1)  # same seed, same batches
    other_rank = SyntheticTwoViewLoader(cfg.data, num_classes=10, rank=0, world_size=2, seed=3)
    assert not torch.equal(next(iter(other_rank))[0], v1)


def _cfg(**sections):
    return resolve(from_dict(sections))


def test_lars_with_zero_sharding_is_refused():
    with pytest.raises(ConfigError, match="optim.name.*dist.zero_stage"):
        check_train_config(_cfg(optim={"name": "lars"}, dist={"zero_stage": 2}, data={"train_path": "synthetic"}))
    check_train_config(_cfg(optim={"name": "sgd"}, dist={"zero_stage": 2}, data={"train_path": "synthetic"}))


def test_data_path_problems_are_named(tmp_path, twelve_class_beton):
    with pytest.raises(ConfigError, match="data.train_path' is empty"):
        check_train_config(_cfg())
    with pytest.raises(ConfigError, match="does not exist"):
        check_train_config(_cfg(data={"train_path": str(tmp_path / "missing.beton")}))
    beton = twelve_class_beton  # a real file: an empty one is refused before its manifest is read
    assert len(json.loads(Path(str(beton) + ".json").read_text())["classes"]) == 12
    with pytest.raises(ConfigError, match="model.num_classes.*12"):
        check_train_config(_cfg(data={"train_path": str(beton)}, model={"num_classes": 10}))
    check_train_config(_cfg(data={"train_path": str(beton)}, model={"num_classes": 12}))


def test_gpu_only_settings_are_refused_on_cpu():
    with pytest.raises(ConfigError, match="dist.precision"):
        check_train_config(_cfg(dist={"precision": "bf16"}, data={"train_path": "synthetic"}))
    with pytest.raises(ConfigError, match="dist.compile"):
        check_train_config(_cfg(dist={"compile": True}, data={"train_path": "synthetic"}))


def test_the_plan_is_derived_from_the_training_sets_images_by_the_loaders_sharding_rule(tmp_path, twelve_class_beton):
    beton = twelve_class_beton  # 24 images: 2 workers x 5 per step = 2 steps per epoch (4 images dropped)
    cfg = prepare_train_config(from_dict({"data": {"train_path": str(beton), "batch_size_per_worker": 5},
                                          "dist": {"num_workers": 2}, "model": {"num_classes": 12},
                                          "train": {"epochs": 30, "run_dir": str(tmp_path / "run")},
                                          "optim": {"warmup_epochs": 3}}))
    d = cfg.derived
    assert (d.train_images, d.steps_per_epoch, d.total_steps, d.warmup_steps) == (24, 2, 60, 6)
    synthetic = prepare_train_config(from_dict({"data": {"train_path": "synthetic", "synthetic_images": 100,
                                                         "batch_size_per_worker": 8},
                                                "train": {"max_steps": 7, "epochs": 10}}))
    assert (synthetic.derived.steps_per_epoch, synthetic.derived.total_steps) == (12, 7)


def test_a_training_set_smaller_than_one_step_is_refused_naming_the_batch(tmp_path, twelve_class_beton):
    with pytest.raises(ConfigError, match=r"'data.batch_size_per_worker' \(16\): .* has 24 images, too few for one "
                                          r"step of 2 workers x 16; set data.batch_size_per_worker=12"):
        prepare_train_config(from_dict({"data": {"train_path": str(twelve_class_beton), "batch_size_per_worker": 16},
                                        "dist": {"num_workers": 2}, "model": {"num_classes": 12},
                                        "train": {"run_dir": str(tmp_path / "run")}}))


def test_the_worker_refuses_a_loader_that_disagrees_with_the_plan():
    from eigenmap.train.worker import _plan

    cfg = resolve(from_dict({"train": {"epochs": 2}}), steps_per_epoch=10)
    assert _plan(cfg, 10).total_steps == 20
    with pytest.raises(RuntimeError, match="plans 10 steps per epoch .* loader has 9"):
        _plan(cfg, 9)
    with pytest.raises(ConfigError, match="no plan"):
        _plan(resolve(from_dict({})), 10)
