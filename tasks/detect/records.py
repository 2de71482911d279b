"""One annotated image, and the box checks every loader (COCO, VOC) shares.

A loader turns its annotation files into ``ImageRecord``s; only then are images decoded,
lazily, by ``DetectionDataset``. Every check here names the annotation file and the object,
so a bad label is fixed in the file, not guessed from a torch assertion.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.images import DataError


class AnnotationError(DataError):
    """A bad annotation; the message names the file, the object and what was expected."""


@dataclass
class ImageRecord:
    """One image and its objects.

    path:    the image file.
    width, height: declared image size in pixels (checked against the decoded image).
    boxes:   float32 [N, 4] x1, y1, x2, y2 in pixels.
    labels:  int64 [N] contiguous labels 1..K (0 is background).
    iscrowd: bool [N]: ignore regions (COCO ``iscrowd``, VOC ``difficult``): matching them is
             neither a hit nor a miss in evaluation, and they are not training targets.
    source:  the annotation file, for error messages.
    areas:   float32 [N] object areas for COCO's small/medium/large ranges: a COCO file's
             ``area`` (its mask area, smaller than the box), NaN where none is given (the box
             area is used); None = all NaN.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    source: str
    image_id: int = 0
    fixed: int = field(default=0)  # boxes clipped or dropped by ``data.fix_boxes``
    areas: np.ndarray | None = None


def check_boxes(
    boxes: np.ndarray,
    width: int,
    height: int,
    *,
    where: str,
    names: list[str],
    fix: bool,
) -> tuple[np.ndarray, int]:
    """Validates float [N, 4] x1y1x2y2 boxes against a ``width`` x ``height`` image.

    Bad boxes (NaN/inf coordinates, zero or negative width/height, outside the image) raise
    ``AnnotationError`` naming ``where`` (the file) and ``names[i]`` (the object). With
    ``fix=True`` boxes are clipped to the image instead and those left empty or non-finite are
    dropped. Returns ``(keep, changed)``: bool [N] mask of boxes to keep and how many boxes
    were clipped or dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    if fix:
        clipped = boxes.copy()
        clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, width)
        clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, height)
        keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        changed = int((~keep).sum() + (finite & keep & (clipped != boxes).any(axis=1)).sum())
        return keep, changed
    hint = "(fix the annotation, or set data.fix_boxes=true to clip or drop bad boxes)"
    for i, (box, name) in enumerate(zip(boxes, names, strict=True)):
        x1, y1, x2, y2 = box
        what = f"{where}: object {i} ({name}) box [x1, y1, x2, y2] = {box.tolist()}"
        if not finite[i]:
            raise AnnotationError(f"{what} has a non-finite coordinate {hint}")
        if x2 <= x1 or y2 <= y1:
            raise AnnotationError(
                f"{what} has zero or negative area (expected x2 > x1 and y2 > y1) {hint}"
            )
        # one pixel of slack: VOC boxes are 1-based inclusive and often touch the border
        if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
            raise AnnotationError(
                f"{what} lies outside the {width}x{height} image (expected 0 <= x <= {width}, "
                f"0 <= y <= {height}) {hint}"
            )
    return np.ones(len(boxes), dtype=bool), 0


def file_id(path: Path) -> Hashable:
    """(device, inode) of the directory entry: one file however its name is spelled
    (``IMG.JPG`` / ``img.jpg`` on a case-insensitive file system, two files on a case-sensitive
    one); links are their own entries. The normalised path where a file system reports no
    inode numbers (0)."""
    stat = path.lstat()
    return (stat.st_dev, stat.st_ino) if stat.st_ino else os.path.normcase(path.absolute())


def check_pixel_units(boxes: list[list[float]], where: str) -> None:
    """Boxes are pixels: an annotation file whose boxes all lie within [0, 1], some of them
    fractional, holds normalised coordinates (YOLO-style converters, Label Studio's percent
    values divided by 100); read as pixels they would be sub-pixel boxes in the top-left
    corner, trained on silently. ``boxes``: the file's raw coordinates, any layout."""
    count = len(boxes)
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size and arr.min() >= 0 and arr.max() <= 1 and (arr != np.round(arr)).any():
        raise AnnotationError(
            f"{where}: all {count} box(es) lie within [0, 1] (largest coordinate "
            f"{arr.max():g}): normalised coordinates? expected pixels (multiply by the image "
            "width and height)"
        )


def make_record(
    path: Path,
    width: int,
    height: int,
    boxes: list[list[float]],
    labels: list[int],
    iscrowd: list[bool],
    *,
    source: str,
    names: list[str],
    fix: bool,
    image_id: int,
    areas: list[float] | None = None,
) -> ImageRecord:
    """An ``ImageRecord`` whose boxes passed ``check_boxes`` (clipped to the image either way).
    ``areas``: per box, the annotation's own area or NaN (see ``ImageRecord``)."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep, fixed = check_boxes(arr, width, height, where=source, names=names, fix=fix)
    arr = arr[keep]
    arr[:, 0::2] = np.clip(arr[:, 0::2], 0, width)
    arr[:, 1::2] = np.clip(arr[:, 1::2], 0, height)
    return ImageRecord(
        path=path,
        width=width,
        height=height,
        boxes=arr.astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1)[keep],
        iscrowd=np.asarray(iscrowd, dtype=bool).reshape(-1)[keep],
        source=source,
        image_id=image_id,
        fixed=fixed,
        areas=None if areas is None else np.asarray(areas, dtype=np.float32).reshape(-1)[keep],
    )


def label_of(name: str, class_names: list[str], *, where: str) -> int:
    """1-based label of class ``name``; a name missing from ``class_names`` is an error."""
    try:
        return class_names.index(name) + 1
    except ValueError:
        raise AnnotationError(
            f"{where}: label {name!r} is not in the class list {class_names} (expected one of "
            "them: the class list comes from data.train or data.classes)"
        ) from None
