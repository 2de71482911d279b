"""Robust image decoding shared by every task: one function, always uint8 RGB.

Photos from phones carry their rotation in EXIF, scanners write CMYK or 16-bit greyscale,
web images are palette or RGBA. ``read_image_rgb`` turns all of them into the same
``uint8 [H, W, 3]`` array, so no task has to know about file formats, and a file that does
not decode raises one error that names it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class DataError(ValueError):
    """The user's data is wrong (an annotation, a mask, an image): the message names the file,
    what is in it and what was expected. Tools print it as one ``error:`` line."""


class ImageDecodeError(DataError):
    """A file that exists but is not a readable image; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the name ends with one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> ``RGB``. Transparent pixels are composited onto white (not black),
    16/32-bit greyscale is rescaled to 0..255 instead of clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def read_image_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Decode ``path`` to ``uint8 [H, W, 3]`` RGB, honouring EXIF orientation.

    size: when given, resize to ``size x size`` (bilinear, antialiased) so images of
          different sizes stack into one batch.
    Raises FileNotFoundError for a missing file and ImageDecodeError for one that is
    truncated, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF; the pixels are what matter
            with Image.open(path) as img:
                img.load()
                img = _to_rgb(ImageOps.exif_transpose(img))
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
                return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(
            f"cannot decode image {str(path)!r}: {err} (expected a readable image file; "
            "delete or replace it)"
        ) from None
