"""The NeuralEF loss reproduces the official implementation's figures in float64."""

from __future__ import annotations

import pytest
import torch

from eigenmap.losses import NeuralEFLoss, neuralef_loss

REL = 1e-9


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((actual - expected).abs().max() <= REL * expected.abs().max())


def test_reference_cases_cover_both_variants(reference_cases):
    assert {c["stop_grad"] for c in reference_cases} == {True, False}


def test_loss_reg_total_and_gradients_match_official_implementation(reference_cases):
    for case in reference_cases:
        psi1 = _t(case["psi1"]).requires_grad_()
        psi2 = _t(case["psi2"]).requires_grad_()
        loss, reg = neuralef_loss(psi1, psi2, t=case["t"], stop_grad=case["stop_grad"])
        total = loss + case["alpha"] * reg
        total.backward()
        name = case["name"]
        assert loss.item() == pytest.approx(case["loss"], rel=REL), name
        assert reg.item() == pytest.approx(case["reg"], rel=REL), name
        assert total.item() == pytest.approx(case["total"], rel=REL), name
        assert _close(psi1.grad, _t(case["grad_psi1"])), name
        assert _close(psi2.grad, _t(case["grad_psi2"])), name


def test_module_matches_reference_and_its_first_step_copies_the_statistics(reference_cases):
    for case in reference_cases:
        k = len(case["psi1"][0])
        module = NeuralEFLoss(k, alpha=case["alpha"], t=case["t"], stop_grad=case["stop_grad"]).double()
        psi1 = _t(case["psi1"]).requires_grad_()
        psi2 = _t(case["psi2"]).requires_grad_()
        terms = module(psi1, psi2)
        terms.total.backward()
        name = case["name"]
        assert terms.total.item() == pytest.approx(case["total"], rel=REL), name
        assert _close(psi1.grad, _t(case["grad_psi1"])), name
        assert _close(module.l2bn.norm_sqr, _t(case["ema_norm_sqr_after_first_step"])), name
        assert _close(module.l2bn.eigenvalues, _t(case["ema_eigenvalues_after_first_step"])), name


def test_stop_grad_and_no_stop_grad_differ_only_in_gradients(reference_cases):
    case = reference_cases[0]
    grads = []
    for stop_grad in (True, False):
        psi1 = _t(case["psi1"]).requires_grad_()
        loss, reg = neuralef_loss(psi1, _t(case["psi2"]), t=case["t"], stop_grad=stop_grad)
        (loss + reg).backward()
        grads.append((loss.item(), reg.item(), psi1.grad))
    assert grads[0][:2] == pytest.approx(grads[1][:2], rel=1e-12)
    assert not torch.allclose(grads[0][2], grads[1][2])
