"""Training on a multi-label file: the single-label online classifier is refused before any
worker starts, naming the key that turns it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eigenmap.config import ConfigError, from_dict, resolve
from eigenmap.train.checks import check_train_config


@pytest.fixture(scope="module")
def multi_label_beton(tmp_path_factory) -> Path:
    """A list file of 6 generated images with 3 flags each, written by our writer."""
    from PIL import Image

    from eigenmap.data import write_beton
    from eigenmap.data.sources import ListSpec

    root = tmp_path_factory.mktemp("multi_label")
    lines = []
    for i in range(6):
        Image.fromarray(np.full((24, 24, 3), 40 * i, dtype=np.uint8)).save(root / f"{i}.png")
        lines.append(f"{i}.png {i % 2} {(i // 2) % 2} 1")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    out = root / "train.beton"
    write_beton(ListSpec(root / "train.txt"), out, workers=1)
    return out


def _cfg(**sections):
    return resolve(from_dict(sections))


def test_the_online_classifier_is_refused_on_multi_hot_labels(multi_label_beton):
    with pytest.raises(ConfigError, match=r"'model.online_classifier'.*multi-label \(multi-hot rows of 3 labels"
                                          r".*set model.online_classifier=false"):
        check_train_config(_cfg(data={"train_path": str(multi_label_beton)}))
    check_train_config(_cfg(data={"train_path": str(multi_label_beton)}, model={"online_classifier": False}))
