"""timm backbones: the config keys, the model they build, weight decay, export to timm's format."""

from __future__ import annotations

import json

import pytest
import torch

from eigenmap.config import ConfigError, apply_overrides, from_dict, resolve
from eigenmap.models import build_model
from eigenmap.train.optim import build_optimizer, param_groups, set_weight_decay
from eigenmap.train.schedule import StepPlan, cosine_between

VIT = ["model.arch=timm:vit_tiny_patch16_224", "model.timm_kwargs.img_size=32", "model.timm_kwargs.patch_size=4",
       "data.resolution=32", "data.eval_resize=32", "model.projector_hidden_dim=32", "model.projector_out_dim=16",
       "model.num_classes=5"]


def _cfg(overrides: list[str]):
    return resolve(from_dict(apply_overrides({}, overrides)))


def test_timm_kwargs_are_set_key_by_key_from_the_command_line():
    cfg = _cfg(VIT)
    assert cfg.model.arch == "timm:vit_tiny_patch16_224"
    assert cfg.model.timm_kwargs == {"img_size": 32, "patch_size": 4}


def test_an_unknown_timm_name_is_a_config_error_naming_close_matches():
    with pytest.raises(ConfigError, match=r"'model\.arch': timm has no model 'vit_tiny_patch16'; close matches: "
                                          r".*timm:vit_tiny_patch16_224"):
        _cfg(["model.arch=timm:vit_tiny_patch16"])


def test_a_bad_timm_kwargs_key_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"'model\.timm_kwargs\.patchsize': timm's vit_tiny_patch16_224 has no "
                                          r"argument 'patchsize'"):
        _cfg([*VIT, "model.timm_kwargs.patchsize=4"])


def test_a_vit_input_size_other_than_the_data_resolution_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.timm_kwargs.img_size=64"):
        _cfg([*VIT, "data.resolution=64", "data.eval_resize=64"])


@pytest.mark.parametrize("overrides,key", [
    (["model.arch=resnet18", "model.timm_kwargs.depth=2"], "model.timm_kwargs"),
    (["model.arch=resnet18", "model.grad_checkpointing=true"], "model.grad_checkpointing"),
    (["model.arch=timm:convnext_atto", "model.small_image_stem=true"], "model.small_image_stem"),
    (["model.arch=timm:convnext_atto", "model.timm_kwargs.num_classes=10"], "model.timm_kwargs.num_classes"),
    (["model.arch=vit_small"], "model.arch"),
])
def test_keys_of_the_other_kind_of_backbone_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(overrides)


def test_a_vit_gives_its_pooled_features_and_keeps_nchw_a_convnext_goes_channels_last():
    torch.manual_seed(0)
    vit = build_model(_cfg(VIT))
    assert vit.feat_dim == 192 and not vit.channels_last
    assert vit.encode(torch.randn(2, 3, 32, 32)).shape == (2, 192)
    convnext = build_model(_cfg(["model.arch=timm:convnext_atto", "model.projector_hidden_dim=0",
                                 "model.projector_out_dim=8"]))
    assert convnext.feat_dim == 320 and convnext.channels_last


def test_position_embeddings_and_tokens_take_no_weight_decay():
    cfg = _cfg([*VIT, "optim.name=adamw", "optim.weight_decay=0.05"])
    model = build_model(cfg)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    no_decay = {id(p) for name in ("biases_and_norms", "embeddings_and_tokens") for p in groups[name]["params"]}
    named = dict(model.named_parameters())
    for name in ("backbone.pos_embed", "backbone.cls_token", "backbone.blocks.0.norm1.weight",
                 "backbone.blocks.0.attn.qkv.bias"):
        assert id(named[name]) in no_decay, name
    assert id(named["backbone.blocks.0.attn.qkv.weight"]) in {id(p) for p in groups["weights"]["params"]}
    assert groups["embeddings_and_tokens"]["weight_decay"] == 0.0 and groups["weights"]["weight_decay"] == 0.05
    # timm's own rule gives the same split of the backbone
    from timm.optim import param_groups_weight_decay

    theirs = param_groups_weight_decay(model.backbone, weight_decay=0.05, no_weight_decay_list=
                                       model.backbone.no_weight_decay())
    assert {id(p) for p in theirs[0]["params"]} == {id(p) for p in model.backbone.parameters()} & no_decay


def test_the_weight_decay_cosine_runs_from_its_start_to_its_end_and_reaches_the_optimiser():
    cfg = _cfg([*VIT, "optim.name=adamw", "optim.weight_decay=0.04", "optim.weight_decay_final=0.4"])
    plan = StepPlan(10, 101, 5, 0.001, 0.04, 0.4)
    assert plan.weight_decay_at(0) == pytest.approx(0.04) and plan.weight_decay_at(100) == pytest.approx(0.4)
    assert plan.weight_decay_at(50) == pytest.approx(0.22)
    assert StepPlan(10, 101, 5, 0.001, 0.04).weight_decay_at(50) is None  # constant: never set per step
    assert cosine_between(200, total_steps=101, start=0.04, end=0.4) == pytest.approx(0.4)
    opt = build_optimizer(build_model(cfg), cfg)
    set_weight_decay(opt, 0.3)
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {
        "weights": 0.3, "biases_and_norms": 0.0, "embeddings_and_tokens": 0.0, "online_head": 0.0}


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(_cfg([*VIT, f"model.grad_checkpointing={str(on).lower()}"]))
        assert model.backbone.grad_checkpointing is on
        model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)))["total"].backward()
        grads.append(model.backbone.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("overrides", [VIT, ["model.arch=resnet18", "data.resolution=32", "data.eval_resize=40",
                                             "model.projector_hidden_dim=0", "model.projector_out_dim=8"]],
                         ids=["vit_tiny", "torchvision_resnet18"])
def test_the_timm_export_loads_back_in_timm_with_the_same_features(overrides, tmp_path):
    from eigenmap.export_timm import TimmExportError, export_timm, load_exported

    torch.manual_seed(0)
    cfg = _cfg(overrides)
    model = build_model(cfg).eval()
    with torch.no_grad():  # BatchNorm statistics other than the initial ones
        model.backbone.train()(torch.randn(16, 3, 32, 32))
    model.eval()
    written = export_timm(cfg, model.backbone, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    name = written["architecture"]
    assert name == cfg.model.arch.removeprefix("timm:") and config["architecture"] == name
    assert config["pretrained_cfg"]["crop_pct"] == 32 / cfg.data.eval_resize and config["num_classes"] == 0
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        diff = (load_exported(tmp_path, name, cfg.model.timm_kwargs)(x) - model.encode(x)).abs().max()
    assert written["max_abs_diff"] <= 1e-4 and diff <= 1e-4
    with pytest.raises(TimmExportError, match="--overwrite"):  # an export already there is kept
        export_timm(cfg, model.backbone, tmp_path)


def test_a_small_image_stem_resnet_has_no_timm_form(tmp_path):
    from eigenmap.export_timm import TimmExportError, export_timm

    cfg = _cfg(["model.arch=resnet18", "model.small_image_stem=true", "model.projector_out_dim=8"])
    with pytest.raises(TimmExportError, match="small_image_stem"):
        export_timm(cfg, build_model(cfg).backbone, tmp_path)


@pytest.mark.parametrize("name,global_batch,peak_lr", [("imagenet_vit_small_100ep", 512, 0.001),
                                                        ("imagenet_vit_base_100ep", 1024, 0.003)])
def test_the_vit_recipes_load_with_the_papers_head_and_dinos_schedule(name, global_batch, peak_lr):
    from pathlib import Path

    from eigenmap.config import load_config

    cfg = resolve(load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"))
    assert cfg.model.arch.startswith("timm:vit_") and cfg.model.projector_out_dim == 8192 and cfg.loss.alpha == 0.0025
    assert cfg.derived.global_batch_size == global_batch and cfg.derived.lr == pytest.approx(peak_lr)
    assert (cfg.optim.name, cfg.optim.weight_decay, cfg.optim.weight_decay_final) == ("adamw", 0.04, 0.4)
