"""The method's promise on real images: stop-grad NeuralEF orders its outputs by eigenvalue.

160 Imagenette images (10 classes x 16, 40 px) go through the project's augmentation kernel
(a random resized crop and flip, then :class:`~eigenmap.data.augment.BatchAugment`'s colour
jitter, grayscale, blur and solarisation) into a bank of augmented views, encoded once by the
project's ResNet-18 (untrained and frozen, so the test costs a minute, not a training run). A
linear eigenfunction head is trained with :class:`~eigenmap.losses.NeuralEFLoss` (stop-grad,
L2-BatchNorm) on pairs of two views of one image: the kernel is the augmentation's, on real
pixels. Its eigenvalue estimates must come out decreasing with the output index.

Measured with this file's settings on the project's 2-core CPU machine, 2026-12-07: Spearman of
output index and eigenvalue estimate -0.929, -0.976 and -0.952 for seeds 0, 1 and 2 (the test runs
seed 0); 38 s for one seed on a quiet machine. The bound is the run report's "ordered" (-0.8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eigenmap.config import from_dict, resolve
from eigenmap.data.augment import BatchAugment
from eigenmap.eval.spectrum import eigenvalue_order
from eigenmap.losses import NeuralEFLoss
from eigenmap.models import build_model

pytestmark = pytest.mark.slow

K, VIEWS, STEPS, PAIRS, ALPHA = 8, 6, 400, 256, 0.5
ORDERED_AT_OR_BELOW = -0.8  # launch.findings.ORDERED_SPEARMAN: what the report calls ordered


def _images(imagenette_dir, per_class: int = 16, side: int = 40) -> torch.Tensor:
    """[N, 3, side, side] uint8 of the first ``per_class`` training images of each class."""
    from PIL import Image

    images = []
    for cls in sorted(p for p in (imagenette_dir / "train").iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir())[:per_class]:
            pixels = np.asarray(Image.open(f).convert("RGB").resize((side, side)))
            images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    return torch.stack(images)


@torch.no_grad()
def _view_bank(images: torch.Tensor, seed: int) -> torch.Tensor:
    """[VIEWS, N, F] encoder features of VIEWS augmented views of every image, standardised."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    cfg = resolve(from_dict({"model": {"arch": "resnet18", "projector_hidden_dim": 64, "projector_out_dim": K},
                             "data": {"resolution": 32}}))
    crop = v2.Compose([v2.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    augment = BatchAugment(cfg.data, seed=seed, channels_last=False)
    encoder = build_model(cfg).backbone.eval()
    bank = []
    for _ in range(VIEWS):
        cropped = torch.stack([crop(image) for image in images])
        view, _ = augment(cropped, cropped)  # view 1's recipe; each call draws new jitter per image
        bank.append(encoder(view))
    bank = torch.stack(bank)
    return (bank - bank.mean((0, 1))) / (bank.std((0, 1)) + 1e-6)


def _train_head(bank: torch.Tensor, seed: int) -> np.ndarray:
    """Eigenvalue estimates [K] of a linear NeuralEF head trained on pairs of views of one image."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(bank.shape[-1], K)
    objective = NeuralEFLoss(K, alpha=ALPHA, stop_grad=True)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    draws = torch.Generator().manual_seed(seed)
    n = bank.shape[1]
    for _ in range(STEPS):
        image = torch.randint(0, n, (PAIRS,), generator=draws)
        first = torch.randint(0, VIEWS, (PAIRS,), generator=draws)
        second = (first + torch.randint(1, VIEWS, (PAIRS,), generator=draws)) % VIEWS  # another view
        terms = objective(head(bank[first, image]), head(bank[second, image]))
        optimiser.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser.step()
    return objective.l2bn.eigenvalues.numpy()


def test_stop_grad_neuralef_on_real_augmented_images_orders_its_outputs_by_eigenvalue(imagenette_dir):
    eigenvalues = _train_head(_view_bank(_images(imagenette_dir), seed=0), seed=0)
    rho = eigenvalue_order(eigenvalues)
    assert rho <= ORDERED_AT_OR_BELOW, f"Spearman {rho:.3f}; eigenvalue estimates {np.round(eigenvalues, 3).tolist()}"
