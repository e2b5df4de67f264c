"""The resume rules (which settings may change between two starts) and the loop's progress guard.

Fast: checkpoints here are directories with the files a complete one has, written through the
real store; the worker runs themselves are in test_train_reliability.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eigenmap.config import ConfigError, from_dict, resolve, to_dict
from eigenmap.models import build_model
from eigenmap.train.checkpoint import LocalCheckpointStore, TrainerState, seal_checkpoint
from eigenmap.train.resume import check_resume, meaning_changes, reposition


def _cfg(run_dir: Path, **sections):
    values = {"data": {"train_path": "synthetic", "batch_size_per_worker": 16},
              "model": {"arch": "resnet18", "projector_hidden_dim": 16, "projector_out_dim": 8, "num_classes": 10},
              "train": {"run_dir": str(run_dir)}}
    for name, keys in sections.items():
        values[name] = {**values.get(name, {}), **keys}
    return resolve(from_dict(values))


def _save_checkpoint(cfg, step: int = 8, data: dict | None = None) -> Path:
    """A complete single-rank checkpoint recording ``cfg`` (and ``data``) in its meta.json."""
    root = Path(cfg.train.run_dir) / "checkpoints"

    def write(path: Path) -> None:
        (path / "engine").mkdir(parents=True)
        torch.save({"module": {}}, path / "engine" / "mp_rank_00_model_states.pt")
        torch.save({"step": step, "epoch": 0, "step_in_epoch": step, "world_size": 1}, path / "trainer_state.pt")
        torch.save({}, path / "rng_rank0.pt")
        (path / "meta.json").write_text(json.dumps({"step": step, "world_size": 1, "config": to_dict(cfg),
                                                    "data": data}))

    LocalCheckpointStore(root, keep=2).save(step, write, {})
    return root / f"step_{step:08d}"


def test_a_changed_meaning_key_is_refused_naming_each_key_old_and_new(tmp_path):
    old = _cfg(tmp_path)
    _save_checkpoint(old)
    new = _cfg(tmp_path, data={"batch_size_per_worker": 40}, train={"seed": 3, "max_steps": 99},
               optim={"base_lr": 1.0})
    with pytest.raises(ConfigError) as refused:
        check_resume(new)
    message = str(refused.value)
    assert "data.batch_size_per_worker: 16 -> 40" in message and "train.seed: 0 -> 3" in message
    assert "--allow-config-change" in message and "step_00000008" in message
    # free keys (run length, lr) are not listed
    assert "max_steps" not in message and "base_lr" not in message
    changes = check_resume(new, allow_config_change=True)
    assert {c.key for c in changes} == {"data.batch_size_per_worker", "train.seed"}


def test_a_changed_plan_is_refused_and_followed_from_the_checkpoints_step_when_allowed(tmp_path):
    """A resumed run keeps the plan it started with: the steps its warm-up and cosine span."""
    old = resolve(_cfg(tmp_path, train={"epochs": 2}), steps_per_epoch=10)
    _save_checkpoint(old)
    shorter = resolve(_cfg(tmp_path, train={"epochs": 2, "max_steps": 12}), steps_per_epoch=10)
    with pytest.raises(ConfigError) as refused:
        check_resume(shorter)
    message = str(refused.value)
    assert "derived.total_steps: 20 -> 12" in message and "derived.warmup_steps: 20 -> 12" in message
    assert "follow the new plan from step 8" in message and "--allow-config-change" in message
    allowed = check_resume(shorter, allow_config_change=True)
    assert {c.key for c in allowed} == {"derived.total_steps", "derived.warmup_steps"}
    same_plan = resolve(_cfg(tmp_path, train={"epochs": 1, "max_steps": 20}), steps_per_epoch=10)
    assert check_resume(same_plan) == []  # the same 20 steps, spelt another way


def test_free_keys_and_a_new_run_pass(tmp_path):
    old = _cfg(tmp_path)
    assert check_resume(old) == []  # no checkpoint yet
    _save_checkpoint(old)
    longer = _cfg(tmp_path, train={"epochs": 300, "log_every_steps": 1, "keep_checkpoints": 5},
                  optim={"warmup_epochs": 2.0})
    assert check_resume(longer) == []


def test_a_rewritten_data_file_is_a_change_even_under_the_same_path(tmp_path):
    old = _cfg(tmp_path)
    _save_checkpoint(old, data={"path": "x.beton", "bytes": 100, "sha256": "a" * 64, "num_images": 10})
    beton = tmp_path / "x.beton"
    beton.write_bytes(b"0" * 100)
    (tmp_path / "x.beton.json").write_text(json.dumps({"classes": ["a"], "counts": {"a": 10}, "num_images": 10,
                                                       "skipped": [], "max_resolution": None, "bytes": 100,
                                                       "sha256": "b" * 64}))
    values = to_dict(old)
    values["data"]["train_path"] = str(beton)
    changed = resolve(from_dict(values))
    with pytest.raises(ConfigError, match=r"data.train_path \(file contents\): 'sha256 aaaa"):
        check_resume(changed)


def test_a_model_change_that_cannot_load_is_refused_even_when_allowed(tmp_path):
    old = _cfg(tmp_path)
    ckpt = _save_checkpoint(old)
    torch.save({"module": build_model(old).state_dict()}, ckpt / "engine" / "mp_rank_00_model_states.pt")
    seal_checkpoint(ckpt)  # the file list follows the rewritten file, as a real save's would
    wider = _cfg(tmp_path, model={"projector_out_dim": 32})
    with pytest.raises(ConfigError, match="cannot be loaded into the changed model, even with --allow-config-change"):
        check_resume(wider, allow_config_change=True)
    no_head = _cfg(tmp_path, loss={"alpha": 0.5})  # same shapes: loads
    assert [c.key for c in check_resume(no_head, allow_config_change=True)] == ["loss.alpha"]


def test_meaning_changes_compares_whole_sections_and_skips_keys_the_old_config_lacks():
    old = {"model": {"arch": "resnet18"}, "loss": {"alpha": 0.1}, "train": {"epochs": 1}}
    new = {"model": {"arch": "resnet50", "new_key": 1}, "loss": {"alpha": 0.1}, "train": {"epochs": 9}}
    assert meaning_changes(old, new) == [("model.arch", "resnet18", "resnet50")]


@pytest.mark.parametrize("old_batch,new_batch,steps_per_epoch,step_in_epoch,expected", [
    (16, 20, 8, 8, (0, 6)),  # 128 images seen: 6 whole steps of 20 (the hang of issue 11: 8 == 8)
    (16, 16, 10, 8, (0, 8)),  # unchanged
    (16, 8, 20, 8, (0, 16)),  # smaller batch: more steps
    (16, 64, 2, 8, (1, 0)),  # past the new epoch's end: the next epoch
    (16, 16, 5, 8, (1, 0)),  # same batch, a smaller data file (allowed): the next epoch
])
def test_reposition_counts_the_images_seen_in_the_epoch(old_batch, new_batch, steps_per_epoch, step_in_epoch,
                                                        expected):
    moved = reposition(TrainerState(step=8, epoch=0, step_in_epoch=step_in_epoch), old_global_batch=old_batch,
                       new_global_batch=new_batch, steps_per_epoch=steps_per_epoch)
    assert (moved.epoch, moved.step_in_epoch) == expected and moved.step == 8


class _EmptyLoader:
    """A loader whose epoch yields nothing: the state a bad position used to leave."""

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        pass

    def __iter__(self):
        return iter(())


def test_an_epoch_without_a_batch_is_an_error_not_an_endless_loop(tmp_path):
    from eigenmap.data import BatchAugment
    from eigenmap.train.preempt import StopRequest
    from eigenmap.train.schedule import StepPlan
    from eigenmap.train.worker import WorkerParts, _loop

    cfg = _cfg(tmp_path, train={"epochs": 1})
    augment = BatchAugment(cfg.data, seed=0)
    parts = WorkerParts(engine=torch.nn.Linear(1, 1), optimizer=None, loader=_EmptyLoader(), augment=augment, store=None,
                        logger=None, stop=StopRequest(tmp_path), run_info={})
    plan = StepPlan(steps_per_epoch=10, total_steps=10, warmup_steps=0, final_lr_ratio=0.0)
    with pytest.raises(RuntimeError, match="yielded no batch for epoch 1 from step 3 of 10 while 7 steps remain"):
        _loop(cfg, parts, plan, TrainerState(step=3, epoch=0, step_in_epoch=3), torch.device("cpu"))


def test_a_timm_keyword_argument_added_since_the_checkpoint_is_a_meaning_change():
    """model.timm_kwargs is free-form: a key the old config did not have changes the model too."""
    old = {"model": {"arch": "timm:vit_tiny_patch16_224", "timm_kwargs": {}}}
    new = {"model": {"arch": "timm:vit_tiny_patch16_224", "timm_kwargs": {"drop_path_rate": 0.1}}}
    assert meaning_changes(old, new) == [("model.timm_kwargs.drop_path_rate", None, 0.1)]
    assert meaning_changes(new, new) == []
