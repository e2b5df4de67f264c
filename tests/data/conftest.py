"""Fixtures of the data tests: small real subsets, broken files, and FFCV files made in tmp.

Everything is written under pytest's temporary folders; real images come from
``../shared/data/imagenette2-96`` (the ``imagenette_dir`` fixture skips when it is absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

INDEX_SIDE = 32
INDEX_COUNT = 224  # 2 workers x 7 batches of 16: shards of whole batches cover it exactly


def _save(img, path: Path, **kwargs) -> None:
    img.save(path, **kwargs)


@pytest.fixture(scope="session")
def odd_files(imagenette_subset: Path, tmp_path_factory) -> dict:
    """A class folder of broken and odd files, made here. Returns ``{"root", "bad", "good"}``.

    ``bad``: file name -> the word its skip reason must contain. ``good``: file name -> the RGB
    value (or None) its top-left pixel must have after conversion.
    """
    from PIL import Image

    root = tmp_path_factory.mktemp("odd_files")
    cls = root / "odd"
    cls.mkdir()
    a_jpeg = sorted(next(iter(sorted(imagenette_subset.iterdir()))).iterdir())[0].read_bytes()

    bad = {}
    (cls / "truncated.JPEG").write_bytes(a_jpeg[: len(a_jpeg) // 2])
    bad["truncated.JPEG"] = "truncated"
    corrupt = bytearray(a_jpeg)
    start = a_jpeg.index(b"\xff\xda") + 20  # garbage in the entropy-coded data, headers intact
    corrupt[start:] = bytes(np.random.default_rng(0).integers(0, 256, len(corrupt) - start, dtype=np.uint8))
    (cls / "corrupt.JPEG").write_bytes(bytes(corrupt))
    bad["corrupt.JPEG"] = "corrupt"
    (cls / "empty.JPEG").write_bytes(b"")
    bad["empty.JPEG"] = "empty"
    (cls / "notes.JPEG").write_text("this is not an image\n")
    bad["notes.JPEG"] = "not an image"
    os.symlink(root / "does-not-exist.jpg", cls / "dangling.jpg")  # unreadable even by root
    bad["dangling.jpg"] = "unreadable"
    (root / "README.txt").write_text("a stray file beside the class folders\n")

    good = {}
    _save(Image.new("L", (40, 30), 77), cls / "gray.jpg", quality=100)
    good["gray.jpg"] = (77, 77, 77)
    _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), cls / "cmyk.jpg", quality=100)
    good["cmyk.jpg"] = (255, 0, 0)
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    _save(pal, cls / "palette.png")
    good["palette.png"] = (0, 0, 255)
    _save(Image.new("RGBA", (40, 30), (255, 0, 0, 0)), cls / "transparent.png")
    good["transparent.png"] = (255, 255, 255)  # composited over white
    _save(Image.new("LA", (40, 30), (10, 255)), cls / "gray_alpha.png")
    good["gray_alpha.png"] = (10, 10, 10)
    _save(Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), cls / "gray16.png")
    good["gray16.png"] = (156, 156, 156)  # 40000 / 257, not clipped to white
    _save(Image.fromarray(np.full((30, 40), 200, dtype=np.int32)), cls / "int32_8bit.tif")
    good["int32_8bit.tif"] = (200, 200, 200)  # 32-bit integers holding 8-bit values: not 200 / 257
    _save(Image.fromarray(np.full((30, 40), 40000, dtype=np.int32)), cls / "int32_16bit.tif")
    good["int32_16bit.tif"] = (156, 156, 156)
    import cv2

    bgr16 = np.zeros((30, 40, 3), dtype=np.uint16)
    bgr16[..., 2] = 65535  # red, written by OpenCV in BGR order
    cv2.imwrite(str(cls / "rgb16.png"), bgr16)
    good["rgb16.png"] = (255, 0, 0)
    _save(Image.new("RGB", (40, 30), (1, 2, 3)).convert("1"), cls / "bilevel.png")
    good["bilevel.png"] = (0, 0, 0)
    return {"root": root, "bad": bad, "good": good}


@pytest.fixture(scope="session")
def index_beton(tmp_path_factory) -> Path:
    """A raw FFCV file whose sample ``i`` has label ``i``: left half dark, right half bright.

    Written with FFCV's own writer (not ours) so the loader tests do not depend on it.
    """
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    class Items:
        def __len__(self):
            return INDEX_COUNT

        def __getitem__(self, i):
            img = np.full((INDEX_SIDE, INDEX_SIDE, 3), 20, dtype=np.uint8)
            img[:, INDEX_SIDE // 2:] = 230
            img[0, 0, 0] = i % 256  # distinct content, so a mix-up would show
            return img, i

    path = tmp_path_factory.mktemp("index_beton") / "index.beton"
    writer = DatasetWriter(str(path), {"image": RGBImageField(write_mode="raw"), "label": IntField()}, num_workers=1)
    writer.from_indexed_dataset(Items())
    return path


def stored_images(beton: Path):
    """Decode every sample of a ``.beton`` directly from its bytes: ``[(image HxWx3, label)]``.

    Independent of FFCV's loader: reads the metadata and allocation table, then OpenCV decodes.
    """
    import cv2
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.memmap(beton, dtype=np.uint8, mode="r")
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    out = []
    for meta in reader.metadata:
        image_meta, label = meta["f0"], int(meta["f1"])
        ptr = int(image_meta["data_ptr"])
        raw = np.asarray(data[ptr: ptr + sizes[ptr]])
        h, w = int(image_meta["height"]), int(image_meta["width"])
        if image_meta["mode"] == 0:  # jpg
            image = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        else:
            image = raw.reshape(h, w, 3)
        out.append((image, label))
    return out


@pytest.fixture(scope="session")
def read_stored():
    """:func:`stored_images` as a fixture (test modules cannot import conftest)."""
    return stored_images
