"""Known-answer test: NeuralEF recovers the eigenfunctions of a Gaussian augmentation kernel.

x ~ N(0, I_d) and x'_i = rho_i x_i + sqrt(1 - rho_i^2) eps_i. Among linear functions the
eigenfunctions of this kernel are the coordinates x_i with eigenvalues rho_i, so a linear
psi = W x trained with the stop-grad loss must learn x_1..x_k in descending rho order.
"""

from __future__ import annotations

import torch

from eigenmap.losses import NeuralEFLoss

RHO = torch.tensor([0.95, 0.8, 0.65, 0.5, 0.35, 0.2, 0.1, 0.05])
K = 4


def _train(stop_grad: bool, steps: int = 1000, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    d = RHO.numel()
    psi = torch.nn.Linear(d, K, bias=False)
    objective = NeuralEFLoss(K, alpha=0.1, t=10.0, stop_grad=stop_grad, ema_momentum=0.99)
    opt = torch.optim.Adam(psi.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, eps = torch.randn(batch, d, generator=g), torch.randn(batch, d, generator=g)
        x2 = RHO * x + (1 - RHO**2).sqrt() * eps
        terms = objective(psi(x), psi(x2))
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        sched.step()
    w = psi.weight.detach()
    return w / w.norm(dim=1, keepdim=True), objective.l2bn.eigenvalues.detach()


def test_stop_grad_recovers_coordinates_in_descending_eigenvalue_order():
    w, eigenvalues = _train(stop_grad=True)
    # output j aligned with coordinate j (|cosine| with e_j), for j = 0..K-1 in rho order
    cos = w.abs()[torch.arange(K), torch.arange(K)]
    assert (cos > 0.95).all(), f"|cosine| with the true eigenfunctions: {cos.tolist()}"
    assert torch.allclose(eigenvalues, RHO[:K], atol=0.05), f"{eigenvalues.tolist()} vs {RHO[:K].tolist()}"


def test_no_stop_grad_recovers_the_same_span():
    w, _ = _train(stop_grad=False)
    # the learned rows span the top-K coordinates: their mass outside them is small
    q, _ = torch.linalg.qr(w.T)  # [d, K] orthonormal basis of the learned span
    inside = q[:K].pow(2).sum(0)  # squared norm of each basis vector inside span(e_1..e_K)
    assert (inside > 0.95**2).all(), f"fraction of the learned span inside the top-{K}: {inside.tolist()}"
