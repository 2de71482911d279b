"""Reading label masks and checking them against their image and the label space.

A mask is a single-channel PNG whose pixel values are class indices: greyscale (``L``,
16-bit ``I;16``) or palette (``P``: the stored index is the label, the palette colours are
ignored unless ``data.palette`` is given; a GIF whose used colours are all grey, as GIF
writers make of greyscale masks, is read by its grey values). RGB masks are read only
through ``data.palette`` (colour -> index), because a colour has no index of its own; an RGB
mask whose three channels are equal is greyscale saved as RGB and is read as such.
``data.mask_values`` maps greyscale values that are not class indices (black-and-white 0/255
masks) to classes 0..K-1.

JPEG and lossy WebP masks are lossy: compression shifts values near every edge, inventing
labels. They are read only through ``data.mask_values`` or ``data.palette``, each pixel
snapped to the nearest listed value or colour. 16-bit colour masks are refused (PIL keeps
only their high bytes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.images import DataError, swapped_size_hint
from tasks.inference import PIL_DECODE_ERRORS

LOSSY_SUFFIXES = (".jpg", ".jpeg")


def is_lossy(path: Path) -> bool:
    """JPEG, or WebP whose bitstream chunk is not lossless ``VP8L``: Pillow saves WebP lossy
    by default, and its ``info`` does not tell the two apart."""
    suffix = path.suffix.lower()
    if suffix == ".webp":
        return _webp_bitstream(path) != b"VP8L"
    return suffix in LOSSY_SUFFIXES


def _webp_bitstream(path: Path) -> bytes:
    """The fourcc of a WebP file's image chunk (``VP8 `` lossy, ``VP8L`` lossless), found by
    walking the RIFF chunk headers (``VP8X`` files put ICC, EXIF or animation chunks first);
    only the 8-byte headers are read, never the image data."""
    with open(path, "rb") as f:
        f.seek(12)  # after "RIFF", the file size and "WEBP"
        while len(header := f.read(8)) == 8:
            fourcc, size = header[:4], int.from_bytes(header[4:], "little")
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc
            f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even size
    return b""


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


def _lookup(
    found: np.ndarray, table: dict[tuple[int, ...], int], lossy: bool, unknown: str
) -> np.ndarray:
    """Label of each row of ``found`` (int [N, C] distinct values or colours) from ``table``
    ({value or colour: label}); a lossy file's strays go to the nearest listed entry, a
    lossless file's are a DataError (``unknown`` is its message, given the stray)."""
    keys = np.asarray(list(table), dtype=np.int64).reshape(len(table), -1)
    labels = np.empty(len(found), dtype=np.int64)
    for j, row in enumerate(found.tolist()):
        key = tuple(row)
        if key in table:
            labels[j] = table[key]
        elif lossy:
            labels[j] = table[tuple(keys[np.abs(keys - row).sum(1).argmin()].tolist())]
        else:
            raise DataError(unknown.format(row if len(row) > 1 else row[0]))
    return labels


def _gif_grey_values(img: Image.Image) -> Image.Image:
    """A GIF mask whose used colours are all grey -> ``L`` of those grey values (GIF writers
    renumber a greyscale mask's values into palette slots); else unchanged. PNG palette masks
    keep their slot numbers: VOC's colour map has grey slots (class 7 is (128, 128, 128))."""
    if img.format != "GIF":
        return img
    colours = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    used = np.unique(np.asarray(img))
    if used.max() >= len(colours):
        return img
    rgb = colours[used]
    grey = (rgb == rgb[:, :1]).all()
    return img.convert("L") if grey and (rgb[:, 0] != used).any() else img


def read_mask(
    path: Path,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    values: Sequence[int] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """The label map of ``path`` as int64 [H, W] (labels not yet checked against the classes).

    palette: ``data.palette`` (RGB and palette-PNG masks are read by colour).
    values:  ``data.mask_values``: the stored value of class i is ``values[i]``; other values
             than those and ``ignore_index`` are an error (JPEG: snapped to the nearest).
    """
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            # PIL reads 16-bit RGB/LA as 8-bit (high bytes): class indices would all become 0
            wide_colour = img.mode in ("RGB", "RGBA", "LA") and ";16" in str(img.tile)
            img.load()
            if img.mode == "P" and not palette:
                img = _gif_grey_values(img)
            mode = img.mode
            void_colour = None
            if mode == "P" and palette:  # by colour; the stored void index stays void
                colours = img.getpalette() or []
                if 3 * ignore_index + 2 < len(colours):
                    void_colour = tuple(colours[3 * ignore_index : 3 * ignore_index + 3])
                img, mode = img.convert("RGB"), "RGB"
            arr = np.asarray(img)
    except PIL_DECODE_ERRORS as err:
        raise DataError(f"cannot read mask {str(path)!r}: {err}") from None
    if wide_colour:
        raise DataError(
            f"mask {str(path)!r} is a 16-bit {mode} image; save it as a single-channel 8- or "
            "16-bit PNG of class indices"
        )
    lossy = is_lossy(path)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if palette and mode in ("RGB", "RGBA"):
            table = palette_lookup(palette)
            if void_colour is not None:
                table.setdefault(void_colour, ignore_index)
            found, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
            unknown = (
                f"mask {str(path)!r} has colour {{}} that data.palette does not list "
                f"(palette colours: {[list(c) for c in table][:8]}...); add it to data.palette"
            )
            return _lookup(found, table, lossy, unknown)[inverse.ravel()].reshape(rgb.shape[:2])
        spread = np.abs(rgb.astype(np.int64) - rgb[..., :1]).max()  # 0: greyscale as RGB
        if mode in ("LA", "PA") or spread == 0:
            arr = rgb[..., 0]
        elif lossy and spread <= 16:  # lossy WebP decodes grey to near-equal channels
            arr = np.round(rgb.mean(axis=-1)).astype(np.uint8)
        else:
            raise DataError(
                f"mask {str(path)!r} is an {mode} colour image with no palette; {PALETTE_HINT}"
            )
    elif mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(f"mask {str(path)!r} has unsupported image mode {mode!r}; {PALETTE_HINT}")
    arr = arr.astype(np.int64)
    if mode == "1" and values and 1 not in values:
        arr *= 255  # a 1-bit black-and-white mask reads 0/1; its listed values are 0/255
    if values:
        table = {(int(v),): i for i, v in enumerate(values)}
        table.setdefault((ignore_index,), ignore_index)
        found, inverse = np.unique(arr, return_inverse=True)
        unknown = (
            f"mask {str(path)!r} holds value {{}}, which is neither in data.mask_values="
            f"{list(values)} nor data.ignore_index={ignore_index} (expected only those values)"
        )
        return _lookup(found[:, None], table, lossy, unknown)[inverse].reshape(arr.shape)
    if lossy:
        raise DataError(
            f"mask {str(path)!r} is a {'lossy WebP' if path.suffix.lower() == '.webp' else 'JPEG'}"
            ": lossy compression changes label values near every "
            "edge, inventing classes; save masks as PNG, or set data.mask_values=[...] (the "
            "stored value of each class, e.g. [0, 255]) to snap each pixel to the nearest"
        )
    return arr


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
            + swapped_size_hint(mask.shape, image.shape)
        )
    bad = ((mask >= num_classes) & (mask != ignore_index)) | (mask < 0)
    if bad.any():
        values = np.unique(mask[bad])[:5].tolist()
        raise DataError(
            f"{where}: label value(s) {values} are >= data.num_classes={num_classes} and are not "
            f"data.ignore_index={ignore_index}; raise data.num_classes, fix the mask, or set "
            "data.ignore_index to the void value"
        )
