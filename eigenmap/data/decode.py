"""One image file decoded and sanitised: RGB pixels, or the reason it cannot go into a dataset.

:func:`decode_image` is what the writer's processes call on each file (once);
:func:`load_rgb` turns any supported file into an ``H x W x 3`` ``uint8`` RGB array; it is also
the loader of the torchvision twin (``tools/twin.py``), so both pipelines see identical pixels
before cropping.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Optional, Union

import numpy as np

__all__ = ["MAX_SIDE_PX", "decode_image", "load_rgb"]

# FFCV stores width and height as uint16.
MAX_SIDE_PX = 65535


def _to_rgb_array(img) -> np.ndarray:
    """A PIL image of any mode as an ``H x W x 3`` uint8 RGB array.

    Alpha (RGBA, LA, palette with transparency) is composited over white, because transparent
    pixels often hold arbitrary colours that a viewer never shows. 16-bit greyscale is scaled
    from 0..65535 to 0..255 (``convert('RGB')`` would clip it to white). 32-bit integer greyscale
    (mode ``I``, which does not say its range) is taken as 0..255 when its maximum is at most 255
    (8-bit values saved from an integer array), else as 0..65535; float images are taken as 0..1
    when their maximum is at most 1, else as 0..255.
    """
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode != "I" or (arr.size and arr.max() > 255):  # at most 255 in 16 bits would be black
            arr = arr / 257.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"could not convert mode {mode} to RGB")
    return np.ascontiguousarray(arr)


def load_rgb(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode an image file to RGB.

    Args:
        path: any image format Pillow reads (JPEG, PNG, WebP, TIFF, BMP, GIF: first frame).

    Returns:
        ``uint8`` array of shape ``[H, W, 3]``. EXIF orientation is not applied (as with
        torchvision's ImageFolder loader and ImageNet practice).

    Raises:
        OSError, ValueError, PIL.UnidentifiedImageError: the file is unreadable, truncated,
        corrupt or not an image. :func:`decode_image` turns these into reasons.
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decodes fully: truncated or corrupt data raises here, not later
        return _to_rgb_array(img)


def decode_image(path: Union[str, os.PathLike]) -> tuple[Optional[str], Optional[np.ndarray]]:
    """Decode a file once and decide whether it can go into the dataset.

    Returns:
        ``(reason, image)``: ``(None, [H, W, 3] uint8 RGB array)`` for a good image (converted
        as :func:`load_rgb` does), else ``(short human-readable reason, None)``, e.g.
        ``"empty file (0 bytes)"``, ``"truncated or corrupt: ..."``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        st = os.stat(path)  # follows links: a dangling link fails here
    except OSError as e:
        return f"unreadable: {e.strerror or e}", None
    if not stat.S_ISREG(st.st_mode):
        return "unreadable: not a regular file", None
    if st.st_size == 0:
        return "empty file (0 bytes)", None
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
            if width == 0 or height == 0:
                return f"image has no pixels ({width}x{height})", None
            if max(width, height) > MAX_SIDE_PX:
                return f"side longer than {MAX_SIDE_PX} px ({width}x{height}); FFCV cannot store it", None
            return None, _to_rgb_array(img)
    except UnidentifiedImageError:
        return "not an image (unrecognised format)", None
    except Image.DecompressionBombError as e:
        return f"too large to decode safely: {e}", None
    except PermissionError as e:
        return f"unreadable: {e.strerror or e}", None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        # PIL reports truncation as OSError("image file is truncated ...") and bad headers as
        # SyntaxError/ValueError; all mean the bytes cannot be trusted.
        return f"truncated or corrupt: {e}", None
    except MemoryError:
        return "too large to decode in memory", None
