"""Reading label masks and checking them against their image and the label space.

A mask is a single-channel PNG whose pixel values are class indices: greyscale (``L``,
16-bit ``I;16``) or palette (``P``: the stored index is the label, the palette colours are
ignored). RGB masks are read only through ``data.palette`` (colour -> index), because a
colour has no index of its own; an RGB mask whose three channels are equal is greyscale
saved as RGB and is read as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.images import DataError

PALETTE_HINT = (
    "convert it to a single-channel index PNG (pixel value = class index; palette PNGs also "
    "work) or set data.palette=[[r,g,b], ...] (entry i = colour of class i; [r,g,b,label] "
    "entries give a colour an explicit label such as the ignore_index)"
)


def palette_lookup(palette: Sequence[Sequence[int]]) -> dict[tuple[int, int, int], int]:
    """``data.palette`` -> ``{(r, g, b): label}``; entries are [r,g,b] (label = position) or
    [r,g,b,label]."""
    table = {}
    for i, entry in enumerate(palette):
        if len(entry) not in (3, 4):
            raise DataError(
                f"data.palette entry {i} is {list(entry)}; expected [r, g, b] or [r, g, b, label]"
            )
        table[(int(entry[0]), int(entry[1]), int(entry[2]))] = int(
            entry[3] if len(entry) == 4 else i
        )
    return table


def _rgb_to_labels(rgb: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> np.ndarray:
    """uint8 [H, W, 3] colours -> int64 [H, W] labels; an unlisted colour is an error."""
    table = palette_lookup(palette)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(codes, return_inverse=True)
    labels = np.empty(len(uniq), dtype=np.int64)
    for j, code in enumerate(uniq.tolist()):
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        if colour not in table:
            raise DataError(
                f"mask {str(path)!r} has colour {list(colour)} that data.palette does not list "
                f"(palette colours: {[list(c) for c in table][:8]}...); add it to data.palette"
            )
        labels[j] = table[colour]
    return labels[inverse].reshape(rgb.shape[:2])


def read_mask(path: Path, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """The label map of ``path`` as int64 [H, W] (values not yet checked)."""
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except OSError as err:
        raise DataError(f"cannot read mask {str(path)!r}: {err}") from None
    if mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        return arr.astype(np.int64)
    if mode == "LA" or mode == "PA":
        return arr[..., 0].astype(np.int64)
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if palette:
            return _rgb_to_labels(rgb, palette, path)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)
        raise DataError(
            f"mask {str(path)!r} is an {mode} colour image with no palette; {PALETTE_HINT}"
        )
    raise DataError(f"mask {str(path)!r} has unsupported image mode {mode!r}; {PALETTE_HINT}")


def check_mask(
    mask: np.ndarray,
    image: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int,
    where: str,
) -> None:
    """Raises a DataError naming ``where`` (the files) when the mask does not fit its image
    or holds a label outside ``0..num_classes-1`` that is not ``ignore_index``."""
    if mask.shape[:2] != image.shape[:2]:
        raise DataError(
            f"{where}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from image size "
            f"{image.shape[1]}x{image.shape[0]}; masks must match their image pixel for pixel"
        )
    bad = ((mask >= num_classes) & (mask != ignore_index)) | (mask < 0)
    if bad.any():
        values = np.unique(mask[bad])[:5].tolist()
        raise DataError(
            f"{where}: label value(s) {values} are >= data.num_classes={num_classes} and are not "
            f"data.ignore_index={ignore_index}; raise data.num_classes, fix the mask, or set "
            "data.ignore_index to the void value"
        )
