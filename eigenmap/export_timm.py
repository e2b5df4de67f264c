"""A trained encoder in timm's own format: ``eigenmap export RUN --format timm --out DIR``.

``DIR/model.safetensors`` holds the encoder's state dict under timm's key names and
``DIR/config.json`` timm's pretrained config (architecture, the run's ``model.timm_kwargs`` as
``model_args``, input size, crop, mean/std), both written by timm's own ``save_for_hf``, so::

    timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)
    timm.create_model(NAME, pretrained=True, num_classes=0, **timm_kwargs,
                      pretrained_cfg_overlay=dict(file="DIR/model.safetensors"))

give the run's encoder features (the pooled features the linear probe reads; the projector and
its eigenfunctions stay in the project's ``model.pt``). A torchvision ResNet run exports to timm's
``resnet18/34/50``: the parameter names are the same, and a strict load into timm's model proves
it (a run with ``model.small_image_stem`` has no timm counterpart and is refused). Before this
returns, the written files are loaded back through ``timm.create_model`` and their features
compared with the run's on a seeded batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from eigenmap.config import TIMM_PREFIX, Config

__all__ = ["TimmExportError", "export_timm", "timm_counterpart", "load_exported"]

WEIGHTS, CONFIG = "model.safetensors", "config.json"


class TimmExportError(ValueError):
    """The run's encoder has no timm form, or the folder already holds an export."""


def timm_counterpart(cfg: Config, backbone: nn.Module) -> tuple[nn.Module, str, dict[str, Any]]:
    """The run's encoder as a timm model: (model, timm name, timm keyword arguments).

    A timm backbone is returned as is; a torchvision ResNet's weights are loaded, strictly, into
    timm's model of the same name (the same parameter and buffer names).
    """
    import timm

    m = cfg.model
    if m.arch.startswith(TIMM_PREFIX):
        return backbone, m.arch[len(TIMM_PREFIX):], dict(m.timm_kwargs)
    if m.small_image_stem:
        raise TimmExportError(f"a {m.arch} with model.small_image_stem (3x3 stride-1 first conv, no max-pool) has no "
                              f"timm counterpart; the default export (model.pt, encoder.pt) holds its weights")
    net = timm.create_model(m.arch, pretrained=False, num_classes=0)
    net.load_state_dict(backbone.state_dict(), strict=True)  # raises on any name or shape timm does not have
    return net, m.arch, {}


def export_timm(cfg: Config, backbone: nn.Module, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``out/model.safetensors`` and ``out/config.json`` for the run's encoder, then load
    them back with timm and compare features.

    Args:
        cfg: the run's resolved config (``model`` and ``data`` sections are read).
        backbone: the run's trained encoder ([N, 3, R, R] -> [N, F]).
        out: the folder (created).

    Returns:
        ``{"architecture", "model_args", "files": [paths], "max_abs_diff"}``: the largest absolute
        difference between the run's features and the reloaded timm model's on 4 seeded images.

    Raises:
        TimmExportError: no timm form, or an export already in ``out`` without ``overwrite``.
    """
    from timm.models import save_for_hf

    out = Path(out)
    if not overwrite and any((out / f).exists() for f in (WEIGHTS, CONFIG)):
        raise TimmExportError(f"{out} already holds {WEIGHTS} / {CONFIG}; pass --overwrite to replace them")
    backbone = backbone.cpu().eval()
    net, name, model_args = timm_counterpart(cfg, backbone)
    r, d = cfg.data.resolution, cfg.data
    data_config = {"input_size": (3, r, r), "mean": tuple(d.mean), "std": tuple(d.std),
                   "crop_pct": r / d.eval_resize, "crop_mode": "center"}  # the project's evaluation transform
    net = net.float().eval()
    # the tag and licence of timm's default (hub) weights do not describe these
    model_config = {"pretrained_cfg": {"tag": "neural_eigenmap", "license": None}}
    save_for_hf(net, out, model_config=model_config, model_args=model_args, safe_serialization=True,
                data_config=data_config)
    x = torch.randn(4, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone(x)
        theirs = load_exported(out, name, model_args)(x)
    return {"architecture": name, "model_args": model_args, "files": [str(out / WEIGHTS), str(out / CONFIG)],
            "max_abs_diff": float((ours - theirs).abs().max())}


def load_exported(folder: Path, name: str, model_args: dict[str, Any]) -> nn.Module:
    """The exported encoder as a user loads it: ``timm.create_model(name, pretrained=True,
    num_classes=0, pretrained_cfg_overlay=dict(file=folder/model.safetensors), **model_args)``."""
    import timm

    net = timm.create_model(name, pretrained=True, num_classes=0,
                            pretrained_cfg_overlay=dict(file=str(Path(folder) / WEIGHTS)), **model_args)
    return net.eval()
