"""Two gloo processes with half a batch each == one process with the whole batch.

This is the bug class of lightly #1977: a gather without a correct backward scales gradients by
1/world_size. Each process computes psi = x @ W on its half, the loss gathers across processes,
and the parameter gradient is averaged over processes as DDP/DeepSpeed do. Value, parameter
gradient and input gradient (times 1/W, see eigenmap.dist.gather) must equal the
single-process figures on the concatenated batch; the L2-BatchNorm statistics must agree on
every rank.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eigenmap.config import LossConfig
from eigenmap.losses import build_loss

WORLD = 2
BATCH, D, K = 16, 10, 6
# each objective's keys beside its name (Matryoshka: NT-Xent on every prefix of the global batch)
LOSSES = {"neuralef": {"stop_grad": True}, "simclr": {}, "barlow_twins": {}, "spectral_contrastive": {},
          "matryoshka": {"name": "matryoshka", "temperature": 0.2, "matryoshka_lengths": (2, 4, 6)},
          "matryoshka_weighted": {"name": "matryoshka", "temperature": 0.2, "matryoshka_lengths": (2, 5, 6),
                                  "matryoshka_weights": (2.0, 0.5, 1.0)}}


def _problem():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(BATCH, D, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(BATCH, D, generator=g, dtype=torch.float64)
    w = torch.randn(D, K, generator=g, dtype=torch.float64)
    return x1, x2, w


def _run(name: str, x1: torch.Tensor, x2: torch.Tensor, w0: torch.Tensor, gather: bool) -> dict:
    cfg = LossConfig(**{"name": name, "alpha": 0.1, **LOSSES[name]}, gather_distributed=gather)
    objective = build_loss(cfg, K).double()
    w = w0.clone().requires_grad_()
    x1, x2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    terms = objective(x1 @ w, x2 @ w)
    terms.total.backward()
    out = {"total": terms.total.detach(), "loss": terms.loss.detach(), "reg": terms.reg.detach(),
           "grad_w": w.grad, "grad_x1": x1.grad, "grad_x2": x2.grad}
    if objective.l2bn is not None:  # NeuralEF: its running statistics
        out["norm_sqr"], out["eigenvalues"] = objective.l2bn.norm_sqr.clone(), objective.l2bn.eigenvalues.clone()
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x1, x2, w = _problem()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = {}
        for name in LOSSES:
            out = _run(name, x1[rows], x2[rows], w, gather=True)
            dist.all_reduce(out["grad_w"])  # what the engine does with parameter gradients
            out["grad_w"] /= WORLD
            results[name] = out
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("gloo")
    mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", LOSSES)
def test_two_processes_match_one_process_on_the_whole_batch(distributed_results, name):
    x1, x2, w = _problem()
    single = _run(name, x1, x2, w, gather=False)
    half = BATCH // WORLD
    for rank, results in enumerate(distributed_results):
        out = results[name]
        for key in ("total", "loss", "reg", "grad_w"):
            assert torch.allclose(out[key], single[key], rtol=1e-10, atol=1e-12), (name, rank, key)
        rows = slice(rank * half, (rank + 1) * half)
        for key in ("grad_x1", "grad_x2"):
            assert torch.allclose(out[key] / WORLD, single[key][rows], rtol=1e-10, atol=1e-12), (name, rank, key)
        if "norm_sqr" in single:
            assert torch.allclose(out["norm_sqr"], single["norm_sqr"], rtol=1e-12)
            assert torch.allclose(out["eigenvalues"], single["eigenvalues"], rtol=1e-12)


@pytest.mark.multiprocess
def test_gradients_are_not_scaled_by_world_size(distributed_results):
    x1, x2, w = _problem()
    single = _run("neuralef", x1, x2, w, gather=False)
    ratio = distributed_results[0]["neuralef"]["grad_w"].norm() / single["grad_w"].norm()
    assert abs(ratio.item() - 1.0) < 1e-9


@pytest.mark.multiprocess
def test_matryoshka_sees_the_other_workers_negatives(distributed_results):
    # a per-worker loss (no gather) averaged over workers is another number: the gather is what matches
    x1, x2, w = _problem()
    half = BATCH // WORLD
    local = sum(_run("matryoshka", x1[r * half:(r + 1) * half], x2[r * half:(r + 1) * half], w, gather=False)["total"]
                for r in range(WORLD)) / WORLD
    assert abs(local.item() - distributed_results[0]["matryoshka"]["total"].item()) > 1e-3
