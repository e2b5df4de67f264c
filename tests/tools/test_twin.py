"""The torchvision twin reads the same images in the same order, with matching statistics.

Tolerance of the statistics comparison. The two pipelines differ by design in two ways: FFCV
decodes its stored JPEG with TurboJPEG's fast settings and resizes with OpenCV's plain bilinear
filter; the twin decodes the original file with Pillow (accurate libjpeg) and resizes with
torchvision's antialiased bilinear filter. Measured on the whole Imagenette train split (two
epochs, 37,000 crops per pipeline at 64 px), the per-channel mean differs by at most 0.005
(R and B; about 1.3 grey levels, from the fast JPEG decode) and the per-crop standard deviation
by at most 0.001, on a [0, 1] scale. The test compares crops of the *same* image (both loaders
deliver the same images in the same order), so image-to-image variation cancels, and allows
0.01 for those systematic differences plus 4 standard errors of the remaining crop-to-crop
noise. A swapped channel order or a wrong crop scale moves these figures by 0.03 or more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eigenmap.config import DataConfig
from eigenmap.data import build_train_loader, read_manifest
from script_loader import load_script

RES = 64
BATCH = 32
EPOCHS = 8
SYSTEMATIC = 0.01


def _crops(loader, epochs):
    """Per-crop channel means and stds ``[n, 3]`` (view 1 then view 2 per batch) and labels."""
    means, stds, labels = [], [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for v1, v2, y in loader:
            for v in (v1, v2):
                x = v.float() / 255
                means.append(x.mean(dim=(2, 3)))
                stds.append(x.std(dim=(2, 3)))
            labels.append(y.clone())
    return torch.cat(means).numpy(), torch.cat(stds).numpy(), torch.cat(labels).numpy()


@pytest.fixture(scope="module")
def both(imagenette_subset, subset_beton):
    cfg = DataConfig(resolution=RES, batch_size_per_worker=BATCH, loader_workers=1)
    ffcv = build_train_loader(cfg, subset_beton, rank=0, world_size=1, seed=1)
    skipped = [s["path"] for s in read_manifest(subset_beton)["skipped"]]
    twin = load_script("tools/twin.py").build_twin_train_loader(cfg, imagenette_subset, rank=0, world_size=1, seed=1,
                                                                num_workers=0, exclude=skipped)
    return ffcv, twin


def test_twin_yields_the_same_batch_layout_and_length(both):
    ffcv, twin = both
    assert len(ffcv) == len(twin)
    f, t = next(iter(ffcv)), next(iter(twin))
    for a, b in zip(f, t):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_twin_reads_the_same_images_in_the_same_order(both):
    ffcv, twin = both
    for epoch in (0, 3):
        labels = []
        for loader in (ffcv, twin):
            loader.set_epoch(epoch)
            labels.append(torch.cat([y.clone() for _, _, y in loader]).numpy())
        assert np.array_equal(labels[0], labels[1])


def test_ffcv_and_twin_crops_have_matching_channel_statistics(both):
    ffcv, twin = both
    f_mean, f_std, f_labels = _crops(ffcv, EPOCHS)
    t_mean, t_std, t_labels = _crops(twin, EPOCHS)
    assert np.array_equal(f_labels, t_labels)
    for name, f, t in (("mean", f_mean, t_mean), ("std", f_std, t_std)):
        d = f - t  # paired: the same image, two independent random crops
        se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
        gap = np.abs(d.mean(axis=0))
        assert (gap <= SYSTEMATIC + 4 * se).all(), (name, gap, se)
    # and both look like natural images, not like an empty or saturated buffer
    assert ((f_mean.mean(axis=0) > 0.3) & (f_mean.mean(axis=0) < 0.6)).all()
    assert (f_std.mean(axis=0) > 0.1).all()
