"""LARS against a per-parameter reference; the recipe's parameter groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from eigenmap.config import from_dict, resolve
from eigenmap.models import build_model
from eigenmap.train.optim import LARS, build_optimizer, param_groups, set_lr


def _reference_lars(p, g, buf, lr, momentum, wd, eta, adapt):
    d = g + wd * p
    if adapt:
        pn, dn = p.norm(), d.norm()
        d = d * (eta * pn / dn if pn > 0 and dn > 0 else 1.0)
    buf = momentum * buf + d
    return p - lr * buf, buf


def test_lars_matches_the_per_parameter_reference_over_two_steps():
    torch.manual_seed(0)
    w, b, z = torch.randn(5, 4), torch.randn(5), torch.zeros(3, 3)  # z: zero norm -> trust 1
    params = [nn.Parameter(t.clone()) for t in (w, b, z)]
    opt = LARS([{"params": params[::2], "weight_decay": 1e-2, "lars_adapt": True},
                {"params": params[1:2], "weight_decay": 0.0, "lars_adapt": False}],
               lr=0.5, momentum=0.9, trust_coefficient=0.02)
    ref = [(w.clone(), torch.zeros_like(w), 1e-2, True), (b.clone(), torch.zeros_like(b), 0.0, False),
           (z.clone(), torch.zeros_like(z), 1e-2, True)]
    for _ in range(2):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        ref = [(*_reference_lars(rp, g, rb, 0.5, 0.9, wd, 0.02, adapt), wd, adapt)
               for (rp, rb, wd, adapt), g in zip(ref, grads)]
        for p, (rp, *_rest) in zip(params, ref):
            torch.testing.assert_close(p.detach(), rp, rtol=1e-6, atol=1e-7)


def _cfg(name="lars"):
    return resolve(from_dict({
        "model": {"arch": "resnet18", "projector_hidden_dim": 32, "projector_out_dim": 16, "num_classes": 10},
        "optim": {"name": name, "weight_decay": 1e-4, "online_head_lr": 0.05},
        "data": {"batch_size_per_worker": 512}}))


def test_param_groups_exclude_biases_norms_and_the_online_head():
    cfg = _cfg()
    model = build_model(cfg)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    head = {id(p) for p in model.online_head.parameters()}
    assert all(p.ndim >= 2 and id(p) not in head for p in groups["weights"]["params"])
    assert all(p.ndim < 2 and id(p) not in head for p in groups["biases_and_norms"]["params"])
    assert {id(p) for p in groups["online_head"]["params"]} == head
    assert groups["weights"]["weight_decay"] == 1e-4 and groups["weights"]["lars_adapt"]
    assert groups["biases_and_norms"]["weight_decay"] == 0.0 and not groups["biases_and_norms"]["lars_adapt"]
    assert groups["online_head"]["peak_lr"] == 0.05
    assert groups["weights"]["peak_lr"] == pytest.approx(0.3 * 512 / 256)  # base_lr scaled by resolve()
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups.values()) == n_all


@pytest.mark.parametrize("name,cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_and_set_lr(name, cls):
    cfg = _cfg(name)
    opt = build_optimizer(build_model(cfg), cfg)
    assert isinstance(opt, cls)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [g["peak_lr"] * 0.5 for g in opt.param_groups]


def test_unresolved_config_is_refused():
    cfg = from_dict({"model": {"arch": "resnet18", "projector_hidden_dim": 8, "projector_out_dim": 8}})
    with pytest.raises(ValueError, match="resolve"):
        param_groups(build_model(cfg), cfg)
