"""Backbones, projector and the assembled two-view model."""

from __future__ import annotations

import pytest
import torch
import torchvision

from eigenmap.config import from_dict
from eigenmap.models import build_backbone, build_model, build_projector


@pytest.mark.parametrize("arch,feat_dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_backbone_outputs_features_and_loads_into_torchvision(arch, feat_dim):
    net, dim = build_backbone(arch)
    assert dim == feat_dim
    net.eval()
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, feat_dim)
    missing, unexpected = getattr(torchvision.models, arch)().load_state_dict(net.state_dict(), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected


def test_backbone_zero_initialises_the_last_bn_of_each_residual_block():
    net, _ = build_backbone("resnet18")
    assert torch.count_nonzero(net.layer1[0].bn2.weight) == 0


def test_small_image_stem_keeps_spatial_resolution():
    net, _ = build_backbone("resnet18", small_image_stem=True)
    assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_unknown_arch_is_rejected_with_the_accepted_ones():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_backbone("resnet101")


def test_projector_is_linear_bn_relu_linear():
    proj = build_projector(512, 64, 16)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert proj[0].bias is None and proj[3].bias is not None
    assert isinstance(build_projector(512, 0, 16), torch.nn.Linear)


def _small_cfg(**loss):
    return from_dict({"model": {"arch": "resnet18", "small_image_stem": True, "projector_hidden_dim": 32,
                                "projector_out_dim": 8, "num_classes": 5}, "loss": loss})


def test_model_takes_both_views_in_one_batch_and_returns_every_term():
    torch.manual_seed(0)
    model = build_model(_small_cfg())
    x = torch.randn(8, 3, 32, 32)  # 4 images x 2 views
    out = model(x, torch.tensor([0, 1, 2, 3]), step=0)
    assert set(out) == {"total", "objective", "loss", "reg", "alpha", "cls_loss", "acc"}
    assert all(v.ndim == 0 for v in out.values())
    # the objective shapes the encoder; the total adds the online classifier's cross-entropy
    assert out["objective"].item() == pytest.approx((out["loss"] + out["alpha"] * out["reg"]).item())
    assert out["total"].item() == pytest.approx((out["objective"] + out["cls_loss"]).item())
    out["total"].backward()
    assert model.backbone.conv1.weight.grad is not None
    assert int(model.l2bn.num_updates) == 1


def test_online_classifier_never_sends_gradient_into_the_encoder():
    torch.manual_seed(0)
    model = build_model(_small_cfg())
    out = model(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    out["cls_loss"].backward()
    assert model.online_head.linear.weight.grad is not None
    assert model.backbone.conv1.weight.grad is None


@pytest.mark.parametrize("name", ["simclr", "barlow_twins", "spectral_contrastive"])
def test_baseline_objectives_plug_into_the_same_model(name):
    model = build_model(_small_cfg(name=name))
    out = model(torch.randn(8, 3, 32, 32))
    assert torch.isfinite(out["total"]) and out["reg"].item() == 0.0 and model.l2bn is None


def test_codes_use_running_statistics_in_eval_mode():
    torch.manual_seed(0)
    model = build_model(_small_cfg())
    model(torch.randn(8, 3, 32, 32))
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    codes = model.codes(x)
    raw = model.projector(model.backbone(x))
    assert codes.shape == (3, 8)
    assert torch.allclose(codes, raw / model.l2bn.norm_sqr.sqrt(), atol=1e-6)
