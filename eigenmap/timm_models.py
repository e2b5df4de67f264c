"""timm image models as encoders: ``model.arch=timm:NAME`` (docs/backbones.md).

``timm.create_model(NAME, pretrained=False, num_classes=0, **model.timm_kwargs)``: timm's own
pooled features (``head_hidden_size`` wide, ``num_features`` for the models tried) are the
encoder output. No weights are downloaded. The config is checked here, before any worker
starts: an unknown name names timm's close matches, a keyword argument timm's model does not
take names the key (:class:`TimmArgumentError`, which :mod:`eigenmap.config` raises as its
``ConfigError``). A leaf module: the config imports it, it imports nothing of this project, and
timm itself only when a timm model is asked for.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from typing import Any

import torch
import torch.nn as nn

__all__ = ["TimmArgumentError", "build_timm_backbone", "check_timm_model", "no_weight_decay_names",
           "is_convolutional"]


class TimmArgumentError(ValueError):
    """``model.arch=timm:NAME`` or ``model.timm_kwargs`` does not build a timm model; the message
    names the config key."""

# set by this project: the encoder is the pooled features, from scratch
_RESERVED = ("pretrained", "num_classes", "pretrained_cfg", "pretrained_cfg_overlay", "features_only")


def build_timm_backbone(name: str, timm_kwargs: dict[str, Any], *, grad_checkpointing: bool = False
                        ) -> tuple[nn.Module, int]:
    """The timm model ``name`` without its classifier.

    Returns:
        (module mapping [N, 3, H, W] -> [N, F], F): F is timm's pooled feature width. The module
        is timm's own, so its state dict carries timm's key names (``eigenmap export --format
        timm`` writes it as is).
    """
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
    if grad_checkpointing:
        net.set_grad_checkpointing(True)
    return net, int(getattr(net, "head_hidden_size", None) or net.num_features)


def no_weight_decay_names(backbone: nn.Module) -> set[str]:
    """Parameter names (relative to ``backbone``) timm keeps out of weight decay beyond biases and
    norms: position embeddings and tokens (``model.no_weight_decay()``: pos_embed, cls_token, ...)."""
    fn = getattr(backbone, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def is_convolutional(backbone: nn.Module) -> bool:
    """More than one Conv2d: channels_last pays off. A ViT has one (its patch embedding)."""
    return sum(isinstance(m, nn.Conv2d) for m in backbone.modules()) > 1


def check_timm_model(name: str, timm_kwargs: dict[str, Any], resolution: int) -> None:
    """Raise TimmArgumentError unless ``timm.create_model(name, **timm_kwargs)`` builds a model that takes
    ``resolution`` px inputs. Built on the meta device (no memory, no init cost); cached."""
    _check(name, json.dumps(timm_kwargs, sort_keys=True, default=repr), resolution)


@functools.lru_cache(maxsize=64)
def _check(name: str, kwargs_json: str, resolution: int) -> None:
    import timm

    kwargs = json.loads(kwargs_json)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join('timm:' + c for c in close)}" if close else "see timm.list_models()"
        raise TimmArgumentError(f"config key 'model.arch': timm has no model {name!r}; {hint}")
    reserved = sorted(set(kwargs) & set(_RESERVED))
    if reserved:
        raise TimmArgumentError(f"config key 'model.timm_kwargs.{reserved[0]}' is set by this project (pretrained=False, "
                          "num_classes=0: the pooled features, trained from scratch); remove it")
    net = _build_for_check(name, kwargs)
    size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    strict = getattr(getattr(net, "patch_embed", None), "strict_img_size", False)
    if size is not None and strict and tuple(size) != (resolution, resolution):
        raise TimmArgumentError(f"config key 'model.timm_kwargs.img_size': timm's {name} takes {tuple(size)} px inputs but "
                          f"data.resolution is {resolution}; set model.timm_kwargs.img_size={resolution} (or "
                          "model.timm_kwargs.dynamic_img_size=true)")


def _build_for_check(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad:
            raise TimmArgumentError(f"config key 'model.timm_kwargs.{bad.group(1)}': timm's {name} has no argument "
                              f"{bad.group(1)!r} ({e}); see the model class's signature in timm") from None
    except Exception:  # some models' init reads values back, which the meta device cannot: build for real
        pass
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except Exception as e:
        raise TimmArgumentError(f"config key 'model.timm_kwargs' ({kwargs}): timm.create_model({name!r}) failed: "
                          f"{type(e).__name__}: {e}") from None
