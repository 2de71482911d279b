"""Pictures for segmentation runs: colour masks, overlays, a GT-vs-prediction grid and the
confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def palette(num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """uint8 [max(K, ignore+1), 3] colours: the PASCAL VOC bit-interleaved palette (class 0
    black, 1 dark red, 2 green, ...), and white for the ignore label."""
    size = max(num_classes, ignore_index + 1)
    labels = np.arange(size)
    colours = np.zeros((size, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((labels >> (3 * bit + channel)) & 1) << (7 - bit)
    colours[ignore_index] = 255
    return colours.astype(np.uint8)


def colorize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """int [H, W] labels -> uint8 [H, W, 3] colours (labels past the table wrap around)."""
    return colours[np.asarray(mask).astype(np.int64) % len(colours)]


def overlay(
    image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """uint8 [H, W, 3] image with the coloured mask blended on; background (0) left clear."""
    colour = colorize(mask, colours).astype(np.float32)
    blend = np.where((np.asarray(mask) > 0)[..., None], (1 - alpha) * image + alpha * colour, image)
    return blend.astype(np.uint8)


def save_grid(rows: Sequence[Sequence[np.ndarray]], path: Path, gap: int = 4) -> Path:
    """Tiles rows of uint8 [h, w, 3] panels (any sizes) into one PNG, left to right, top down."""
    height = sum(max(p.shape[0] for p in row) for row in rows) + gap * (len(rows) - 1)
    width = max(sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rows)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    top = 0
    for row in rows:
        left = 0
        for panel in row:
            canvas[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
            left += panel.shape[1] + gap
        top += max(p.shape[0] for p in row) + gap
    Image.fromarray(canvas).save(path)
    return path
