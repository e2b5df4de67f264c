"""Multi-label test data made from real images: composites of Imagenette images side by side.

Each composite pastes one to three images of different classes next to each other and carries
the flags of those classes, so a list file of them is a small multi-label set in the format of
the DeepHash splits (``PATH FLAG_1 ... FLAG_C``). Everything is written under the caller's
temporary folder; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE_PX = 32  # each pasted image; a composite is 32 px high and 32, 64 or 96 px wide


def imagenette_classes(image_dir: Path, split: str) -> list[Path]:
    """The class folders of one Imagenette split, sorted (the flag order)."""
    return sorted(p for p in (image_dir / split).iterdir() if p.is_dir())


def make_composites(image_dir: Path, out_dir: Path, *, split: str, count: int, seed: int,
                    max_parts: int = 3) -> list[tuple[str, np.ndarray]]:
    """``count`` composites of ``split``'s images, saved as JPEG under ``out_dir/images/``.

    Args:
        image_dir: the Imagenette root (``train/`` and ``val/`` of class folders).
        out_dir: where ``images/`` goes; the paths returned are relative to it.
        split: ``train`` or ``val``: two sets made from different splits share no image.
        count: composites to make.
        seed: picks each composite's number of parts (1..max_parts) and classes.
        max_parts: the most images pasted into one composite.

    Returns:
        ``[(relative path, flags [C] uint8)]``, C the number of classes, in the order made. No
        source image is used twice.
    """
    from PIL import Image

    classes = imagenette_classes(image_dir, split)
    files = [sorted(c.iterdir()) for c in classes]
    used = [0] * len(classes)
    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for j in range(count):
        parts = sorted(rng.choice(len(classes), size=int(rng.integers(1, max_parts + 1)), replace=False).tolist())
        canvas = Image.new("RGB", (SIDE_PX * len(parts), SIDE_PX))
        for slot, cls in enumerate(parts):
            with Image.open(files[cls][used[cls]]) as img:
                canvas.paste(img.convert("RGB").resize((SIDE_PX, SIDE_PX)), (slot * SIDE_PX, 0))
            used[cls] += 1
        rel = f"images/{split}_{j:04d}.jpg"
        canvas.save(out_dir / rel, quality=95)
        flags = np.zeros(len(classes), dtype=np.uint8)
        flags[parts] = 1
        rows.append((rel, flags))
    return rows


def list_line(path: str, flags: np.ndarray) -> str:
    """One line of a multi-label list file."""
    return " ".join([path, *(str(int(f)) for f in flags)])
