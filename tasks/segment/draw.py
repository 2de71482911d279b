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


def class_fractions(pred: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """{class name: fraction of the pixels of ``pred`` (int [H, W] labels)} for the classes
    present, rounded to 4 places."""
    counts = np.bincount(pred.ravel(), minlength=len(class_names)) / pred.size
    return {n: round(float(c), 4) for n, c in zip(class_names, counts, strict=True) if c > 0}


def report_prediction(
    path: Path,
    pred: np.ndarray,
    class_names: Sequence[str],
    colours: np.ndarray,
    out_dir: Path | None,
    image: np.ndarray | None = None,
) -> dict:
    """What ``tools/predict.py`` and ``tools/infer_onnx.py`` do with one image's int ``pred``
    [H, W] labels: print ``<path>: pixels person 23.8%, ...``; with ``out_dir``, save the mask
    and overlay (``save_prediction``; ``image`` uint8 [H, W, 3] is needed then). Returns the
    image's ``predictions.json`` entry."""
    fractions = class_fractions(pred, class_names)
    entry: dict = {"image": str(path), "fractions": fractions}
    if out_dir is not None:
        if image is None:
            raise ValueError("report_prediction: out_dir needs the image to draw the overlay")
        entry.update(save_prediction(out_dir, Path(path).stem, image, pred, colours))
    shares = ", ".join(f"{name} {share:.1%}" for name, share in fractions.items())
    print(f"{path}: pixels {shares}")
    return entry


def save_prediction(
    out_dir: Path, stem: str, image: np.ndarray, pred: np.ndarray, colours: np.ndarray
) -> dict[str, str]:
    """Writes ``<stem>_mask.png`` and ``<stem>_overlay.png`` into ``out_dir`` (made if needed)
    for int ``pred`` [H, W] labels; returns their paths as ``{"mask": ..., "overlay": ...}``.

    The mask's pixel value is the class index: a palette PNG shown in ``colours`` while the
    table fits PNG's 256 palette entries, else a 16-bit greyscale PNG (a palette cannot hold
    label 256 and up; 8 bits would wrap them onto other classes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "mask": str(out_dir / f"{stem}_mask.png"),
        "overlay": str(out_dir / f"{stem}_overlay.png"),
    }
    if len(colours) <= 256:
        mask = Image.fromarray(pred.astype(np.uint8))
        mask.putpalette(colours.flatten().tolist())  # L -> P, values kept
    else:
        mask = Image.fromarray(pred.astype(np.uint16))
    mask.save(paths["mask"])
    Image.fromarray(overlay(image, pred, colours)).save(paths["overlay"])
    return paths


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
