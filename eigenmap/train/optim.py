"""Optimisers: LARS (the recipe), SGD and AdamW, with the recipe's parameter groups.

Biases and norm parameters (``p.ndim < 2``) take no weight decay and no LARS adaptation, nor do a
timm backbone's position embeddings and tokens (its ``no_weight_decay()``: timm's own
``param_groups_weight_decay`` rule); the online monitoring classifier is its own group with its own peak lr (``optim.online_head_lr``) and
no weight decay. Every group carries ``peak_lr``; the loop sets ``lr = peak_lr * factor(step)``.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from eigenmap.config import Config
from eigenmap.timm_models import no_weight_decay_names

__all__ = ["LARS", "param_groups", "build_optimizer", "set_lr", "set_weight_decay"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017), as in the Barlow Twins / NeuralEF code.

    Per parameter p with gradient g: d = g + wd * p; if the group has ``lars_adapt``,
    d *= trust * ||p|| / ||d|| (1 when either norm is 0); buf = momentum * buf + d; p -= lr * buf.

    The per-layer norms need whole parameters: under DeepSpeed ZeRO >= 1 the optimiser only
    sees flat shards, so LARS is for ZeRO stage 0 (``check_train_config`` enforces it).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, lars_adapt: bool = True):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_adapt=lars_adapt)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # foreach kernels: one launch per op for the whole group instead of one per tensor
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["lars_adapt"]:
                p_norm = torch.stack(torch._foreach_norm(params))
                d_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where((p_norm > 0) & (d_norm > 0),
                                    group["trust_coefficient"] * p_norm / d_norm, torch.ones_like(p_norm))
                grads = torch._foreach_mul(grads, list(trust.unbind()))
            bufs = []
            for p, d in zip(params, grads):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """The recipe's groups: weights (decay, LARS), biases/norms and a timm backbone's position
    embeddings/tokens (neither), online head.

    Each group has ``name`` and ``peak_lr``; ``lr`` starts at the peak. The online classifier
    (``model.online_head``) is excluded from the encoder groups by identity, not by name.
    """
    head = getattr(model, "online_head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    backbone = getattr(model, "backbone", None)
    tokens = {f"backbone.{n}" for n in no_weight_decay_names(backbone)} if backbone is not None else set()
    weights, flat, embeddings = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in head_ids:
            continue
        if p.ndim < 2:  # biases and norm scales: p.ndim == 1
            flat.append(p)
        else:  # a ViT's pos_embed [1, T, D] and cls_token [1, 1, D] are not weights to shrink
            (embeddings if name in tokens else weights).append(p)
    lr = cfg.derived.lr
    if lr is None:
        raise ValueError("derived.lr is null: pass the config through eigenmap.config.resolve() first")
    groups = [
        dict(name="weights", params=weights, peak_lr=lr, lr=lr, weight_decay=cfg.optim.weight_decay,
             lars_adapt=True),
        dict(name="biases_and_norms", params=flat, peak_lr=lr, lr=lr, weight_decay=0.0, lars_adapt=False),
        dict(name="embeddings_and_tokens", params=embeddings, peak_lr=lr, lr=lr, weight_decay=0.0, lars_adapt=False),
    ]
    if head_ids:
        groups.append(dict(name="online_head", params=list(head.parameters()), peak_lr=cfg.optim.online_head_lr,
                           lr=cfg.optim.online_head_lr, weight_decay=0.0, lars_adapt=False))
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optim.name`` over :func:`param_groups` (pass it to DeepSpeed)."""
    o, lr = cfg.optim, cfg.derived.lr
    groups = param_groups(model, cfg)
    on_cuda = next(model.parameters()).is_cuda
    if o.name == "lars":
        return LARS(groups, lr=lr, momentum=o.momentum, trust_coefficient=o.trust_coefficient)
    if o.name == "sgd":
        for g in groups:
            g.pop("lars_adapt")
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, foreach=True)
    if o.name == "adamw":
        for g in groups:
            g.pop("lars_adapt")
        # fused: one kernel for the whole update on CUDA; foreach elsewhere
        return torch.optim.AdamW(groups, lr=lr, betas=(o.momentum, 0.999), fused=on_cuda or None,
                                 foreach=None if on_cuda else True)
    raise ValueError(f"unknown optimiser {o.name!r}; accepted: lars, sgd, adamw")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's ``lr`` to ``peak_lr * factor`` (works through DeepSpeed's wrappers)."""
    for g in optimizer.param_groups:
        g["lr"] = g["peak_lr"] * factor


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Set the weight decay of the decayed group (``weights``); the others keep theirs (0)."""
    for g in optimizer.param_groups:
        if g.get("name") == "weights":
            g["weight_decay"] = weight_decay
