"""Near-duplicates across two sets: the search on arrays, the pixel signatures, the leak rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from eigenmap.eval.features import FeatureSet, thumbnails
from eigenmap.eval.knn import near_duplicates
from eigenmap.eval.overlap import LEAK_SHARE, set_overlap


def test_near_duplicates_counts_the_queries_that_copy_a_database_row_and_names_the_closest():
    rng = np.random.default_rng(0)
    database = rng.standard_normal((500, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    queries[[3, 7, 21]] = 2.0 * database[[10, 200, 499]] + 1e-4 * rng.standard_normal((3, 32))  # scaled copies
    found = near_duplicates(database, queries, min_cosine=0.999, examples=2, memory_budget_bytes=4 * 33 * 64)
    assert (found["count"], found["queries"]) == (3, 40) and found["share"] == pytest.approx(3 / 40)
    assert len(found["examples"]) == 2
    assert {(e["query"], e["database"]) for e in found["examples"]} <= {(3, 10), (7, 200), (21, 499)}
    assert all(e["cosine"] >= 0.999 for e in found["examples"])
    assert near_duplicates(database, queries[:3], min_cosine=0.999)["count"] == 0


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def test_pixel_signatures_match_a_reencoded_copy_and_not_another_image():
    rng = np.random.default_rng(1)
    # smooth random images (block noise upsampled), as photographs are smoother than pixel noise
    images = [np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8) for _ in range(20)]
    originals = thumbnails(_batch([_jpeg(x, 90) for x in images]))
    copies = thumbnails(_batch([_jpeg(x, 80) for x in images]))
    assert originals.shape == (20, 256) and torch.allclose(originals.norm(dim=1), torch.ones(20))
    sims = copies @ originals.T
    assert sims.diagonal().min() >= 0.995
    assert (sims - 2 * torch.eye(20)).max() < 0.5


def _set(thumbs: np.ndarray | None, features: np.ndarray) -> FeatureSet:
    return FeatureSet(None, features, None, np.zeros(len(features), dtype=np.int64), {}, thumbs)


def test_a_set_largely_made_of_copies_is_a_leak_and_a_few_copies_are_not():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((200, 256)).astype(np.float32)
    val = rng.standard_normal((100, 256)).astype(np.float32)
    features = rng.standard_normal((100, 16)).astype(np.float32)
    few = val.copy()
    few[:2] = train[:2]
    found = set_overlap(_set(train, features[:100].repeat(2, 0)), _set(few, features))
    assert (found["count"], found["leak"]) == (2, False) and found["by"].startswith("thumbnails")
    many = val.copy()
    many[:int(LEAK_SHARE * 100)] = train[:int(LEAK_SHARE * 100)]
    assert set_overlap(_set(train, features.repeat(2, 0)), _set(many, features))["leak"]
    # without pixel signatures the arrays themselves are compared
    found = set_overlap(_set(None, features), _set(None, features[::-1].copy()))
    assert found["count"] == 100 and found["by"].startswith("features")
