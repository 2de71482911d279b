"""Robust image decoding shared by every task and the ONNX runtime: always uint8 RGB.

Photos from phones carry their rotation in EXIF, scanners write CMYK or 16-bit greyscale,
web images are palette or RGBA. ``read_image_rgb`` turns all of them into the same
``uint8 [H, W, 3]`` array, so no task has to know about file formats, and a file that does
not decode raises one error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# The decoder is the ONNX inference module's (which must stand alone): training, predict.py
# and infer_onnx.py turn every file into the same pixels.
from tasks.inference import IMAGE_EXTENSIONS, PIL_DECODE_ERRORS, read_image


class DataError(ValueError):
    """The user's data is wrong (an annotation, a mask, an image): the message names the file,
    what is in it and what was expected. Tools print it as one ``error:`` line."""


class ImageDecodeError(DataError):
    """A file that exists but is not a readable image; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the name ends with one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Decode ``path`` to ``uint8 [H, W, 3]`` RGB, honouring EXIF orientation
    (``tasks.inference.read_image``).

    size: when given, resize to ``size x size`` (bilinear, antialiased) so images of
          different sizes stack into one batch.
    Raises FileNotFoundError for a missing file and ImageDecodeError for one that is
    truncated, corrupt or not an image.
    """
    try:
        return read_image(path, size)
    except ValueError as err:
        raise ImageDecodeError(
            f"{err} (expected a readable image file; delete or replace it)"
        ) from None


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as ``read_image_rgb`` returns it: the header's size,
    swapped when an EXIF orientation tag turns the picture by 90 degrees. Reads the header
    only."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format == "PNG":  # getexif() decodes a whole PNG to look for a late eXIf
                exif = Image.Exif()  # chunk; one before the pixels (the usual place) is in info
                if "exif" in img.info:
                    exif.load(img.info["exif"])
            else:
                exif = img.getexif()
            turned = exif.get(0x0112) in (5, 6, 7, 8)  # Orientation: transposes
    except PIL_DECODE_ERRORS as err:
        raise ImageDecodeError(
            f"cannot read image {str(path)!r}: {err} (expected a readable image file)"
        ) from None
    return (height, width) if turned else (width, height)


def checked_size(path: Path, declared: tuple[int, int] | None, where: str) -> tuple[int, int]:
    """(width, height) of ``path`` as displayed (``displayed_size``). An annotation file's
    ``declared`` size, when it gives one, must be that size (annotations are drawn on it): a
    DataError naming ``where`` otherwise, found when the data is opened (a header read per
    image) rather than when the image is first decoded."""
    actual = displayed_size(path)
    if declared is not None and actual != declared:
        width, height = declared
        raise DataError(
            f"{where}: image {str(path)!r} is declared {width}x{height} but is "
            f"{actual[0]}x{actual[1]} (expected equal sizes)"
            + swapped_size_hint(actual[::-1], (height, width))
        )
    return actual


def is_hidden(path: Path, root: Path) -> bool:
    """True when a file or folder between ``root`` and ``path`` is hidden (``.DS_Store``,
    macOS ``._x.jpg``, ``.ipynb_checkpoints/``) or is the ``__MACOSX/`` folder macOS zips
    carry: such files are never data."""
    return any(p.startswith(".") or p == "__MACOSX" for p in path.relative_to(root).parts)


def walk(folder: Path) -> list[Path]:
    """Every path below ``folder`` (sub-folders and files), symlinked sub-folders followed
    (``Path.rglob`` skips them before Python 3.13), each real folder once so a link back up
    the tree does not loop. Unsorted; callers filter and sort."""
    found: list[Path] = []
    seen: set[str] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(top) / n for n in [*dirs, *names]]
    return found


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` (with ``recursive``, below it too: ``walk``), sorted; hidden
    ones and ``__MACOSX/`` (``is_hidden``) and folders named like images left out."""
    paths = walk(folder) if recursive else folder.iterdir()
    return sorted(p for p in paths if is_image_file(p) and not is_hidden(p, folder) and p.is_file())


def swapped_size_hint(actual_hw: tuple[int, ...], expected_hw: tuple[int, ...]) -> str:
    """A hint for a size mismatch that is a 90-degree turn (empty otherwise): EXIF orientation
    turns a photo when it is displayed, and annotations follow the displayed image."""
    if tuple(actual_hw[:2]) != tuple(expected_hw[1::-1]):
        return ""
    return (
        "; width and height swapped: if the image has an EXIF orientation tag, annotations "
        "and masks must follow the image as displayed, turned"
    )


def list_images(args: Sequence[str | os.PathLike], *, unique_stems: bool) -> list[Path]:
    """The image files named on a command line (``tools/predict.py``, ``infer_onnx.py``),
    checked before any result is written, so a bad name does not stop the tool half-way.

    A folder stands for the image files directly inside it (sorted; hidden and other files
    skipped). A missing path raises FileNotFoundError; a file that does not decode as an
    image (a truncated one included: every image is decoded once here, a few ms beside a
    model's forward pass) raises ImageDecodeError. ``unique_stems``: the outputs are named by stem,
    so two images with one stem (``a/0.jpg``, ``b/0.png``) are an error instead of one
    overwriting the other.
    """
    paths: list[Path] = []
    for arg in map(Path, args):
        if arg.is_dir():
            found = image_files(arg, recursive=False)
            if not found:
                nested = sorted({p.parent for p in image_files(arg)})  # an ImageFolder root?
                hint = (
                    f"; its sub-folders do ({len(nested)}): name them, e.g. "
                    f"{' '.join(str(d) for d in nested[:3])}"
                    if nested
                    else f" (expected names ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
                raise FileNotFoundError(f"folder {str(arg)!r} holds no image files{hint}")
            paths += found
        elif not arg.exists():
            raise FileNotFoundError(f"image file {str(arg)!r} does not exist")
        else:
            paths.append(arg)
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
        except PIL_DECODE_ERRORS as err:
            raise ImageDecodeError(
                f"cannot read {str(path)!r} as an image: {err} (expected an image file)"
            ) from None
    if unique_stems:
        first: dict[str, Path] = {}
        for path in paths:
            if path.stem in first:
                raise DataError(
                    f"images {str(first[path.stem])!r} and {str(path)!r} share the name "
                    f"{path.stem!r}: their outputs would overwrite each other in the output "
                    "folder (rename one, or run them separately)"
                )
            first[path.stem] = path
    return paths
