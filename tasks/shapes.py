"""Synthetic "shapes" data: textured images with coloured circles, squares and triangles.

The default data of ``tools/train.py --task detect`` (and of segmentation) when no folder is
given: it needs no download, is deterministic per ``(seed, index)`` and is easy enough that a
small detector learns it on a CPU in minutes, so the demo shows real learning.

>>> s = make_shapes_sample(0, seed=0)
>>> s.image.shape, s.masks.shape, s.boxes.shape, s.labels.shape
((128, 128, 3), (N, 128, 128), (N, 4), (N,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
"""Class names; label ``k`` (1-based) is ``SHAPE_CLASSES[k - 1]``, label 0 is background."""

_EMPTY_FRACTION = 0.08  # share of images with no object at all (valid negatives)
_MIN_VISIBLE = 0.6  # an object keeps at least this fraction of its area visible
_PLACEMENT_TRIES = 20  # attempts to place each object before giving up on it


@dataclass
class ShapesSample:
    """One synthetic image with its instances.

    image:  uint8 [H, W, 3] RGB.
    masks:  bool [N, H, W] visible part of each instance (later objects occlude earlier ones).
    boxes:  float32 [N, 4] x1, y1, x2, y2 in pixels, tight around each mask
            (x2 = last column + 1, so a 1-pixel object has width 1).
    labels: int64 [N] in 1..len(SHAPE_CLASSES).
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float [H, W, 3] in 0..255: a colour, a smooth low-frequency blotch field and pixel noise."""
    base = rng.uniform(40, 215, size=3)
    coarse = rng.normal(0, 25, size=(5, 5, 3))
    # bilinear upsampling of the 5x5 field: interp[i, a] is the weight of coarse row a at pixel i
    grid = np.linspace(0, 4, size)
    interp = np.stack([np.interp(grid, np.arange(5), np.eye(5)[a]) for a in range(5)], axis=1)
    field = np.einsum("ia,abc,jb->ijc", interp, coarse, interp)
    return base + field + rng.normal(0, 8, size=(size, size, 3))


def _shape_mask(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Bool [H, W] mask of one randomly placed, sized and (for polygons) rotated shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    radius = rng.uniform(0.07, 0.22) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    sides = 4 if kind == "square" else 3
    angle = rng.uniform(0, 2 * np.pi / sides)
    corners = [
        (
            cx + radius * np.cos(angle + 2 * np.pi * k / sides),
            cy + radius * np.sin(angle + 2 * np.pi * k / sides),
        )
        for k in range(sides)
    ]
    inside = np.ones((size, size), dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        # corners go counter-clockwise in image coordinates: inside is where the cross is >= 0
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def make_shapes_sample(
    index: int, *, seed: int, size: int = 128, max_objects: int = 4
) -> ShapesSample:
    """The ``index``-th sample of the stream ``seed``; same arguments -> same sample.

    Objects are drawn in order; a new object is rejected (and redrawn) when it would hide more
    than ``1 - _MIN_VISIBLE`` of an earlier one, so every instance stays recognisable.
    """
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    count = 0 if rng.random() < _EMPTY_FRACTION else int(rng.integers(1, max_objects + 1))
    masks: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(count):
        label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        for _ in range(_PLACEMENT_TRIES):
            mask = _shape_mask(rng, SHAPE_CLASSES[label - 1], size)
            if all((m & ~mask).sum() >= _MIN_VISIBLE * m.sum() for m in masks):
                break
        else:
            continue
        masks = [m & ~mask for m in masks]
        masks.append(mask)
        labels.append(label)
        colour = rng.uniform(0, 255, size=3)
        # keep the shape visible against its background: push the colour away if too close
        local = image[mask].mean(axis=0)
        if np.abs(colour - local).max() < 60:
            colour = np.where(local > 127, local - 100, local + 100)
        image[mask] = colour + rng.normal(0, 8, size=(int(mask.sum()), 3))
    mask_array = np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return ShapesSample(
        image=np.clip(image, 0, 255).astype(np.uint8),
        masks=mask_array,
        boxes=boxes,
        labels=np.asarray(labels, dtype=np.int64),
    )


def semantic_mask(sample: ShapesSample) -> np.ndarray:
    """uint8 [H, W] class map: 0 = background, else the label of the topmost object."""
    out = np.zeros(sample.image.shape[:2], dtype=np.uint8)
    for mask, label in zip(sample.masks, sample.labels, strict=True):
        out[mask] = label
    return out
