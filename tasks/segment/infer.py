"""Whole-image inference for any input size: optional downscale to the training resolution,
pad to the output stride, optional sliding window, horizontal-flip and multi-scale test-time
augmentation, then crop back and upsample the logits to the input size.

Padding to a multiple of the output stride keeps every feature cell aligned with the same
pixels as in training crops (bilinear upsampling of an odd-sized map shifts it by a fraction
of a cell otherwise). Padding uses 0, the normalised mean colour, as the training pad does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _forward_padded(model: nn.Module, images: Tensor, multiple: int) -> Tensor:
    """Logits Tensor[B, K, H, W] of ``images`` padded right/bottom to ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    return model(x).preds[..., :h, :w]


def _forward_tta(model: nn.Module, images: Tensor, multiple: int, flip: bool) -> Tensor:
    logits = _forward_padded(model, images, multiple)
    if flip:
        logits = logits + _forward_padded(model, images.flip(-1), multiple).flip(-1)
        logits = logits / 2
    return logits


def _windows(size: int, window: int, step: int) -> list[int]:
    """Start offsets so windows of ``window`` pixels cover ``size`` with stride ``step``."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step))
    return [*starts, size - window]


def scaled_size(height: int, width: int, max_size: int, factor: float = 1.0) -> tuple[int, int]:
    """(height, width) with the longest side shrunk to ``max_size`` (rounded, as
    albumentations' ``LongestMaxSize`` does in training; 0 = no shrinking), then scaled by
    ``factor`` (multi-scale test-time augmentation); unchanged when the result is the input."""
    scale = max_size / max(height, width) if max_size > 0 else 1.0
    scale = min(scale, 1.0) * factor
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _predict_at_size(
    model: nn.Module, images: Tensor, multiple: int, window: int, overlap: float, flip: bool
) -> Tensor:
    """Logits Tensor[B, K, H, W] of ``images`` as they are: one pass or sliding windows."""
    h, w = images.shape[-2:]
    if window <= 0 or (h <= window and w <= window):
        return _forward_tta(model, images, multiple, flip)
    step = max(1, int(window * (1 - overlap)))
    total: Tensor | None = None
    count = torch.zeros(1, 1, h, w, device=images.device)
    for top in _windows(h, window, step):
        for left in _windows(w, window, step):
            crop = images[..., top : top + window, left : left + window]
            logits = _forward_tta(model, crop, multiple, flip)
            if total is None:
                total = images.new_zeros(images.shape[0], logits.shape[1], h, w)
            total[..., top : top + window, left : left + window] += logits
            count[..., top : top + window, left : left + window] += 1
    return total / count


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    *,
    multiple: int = 32,
    window: int = 0,
    overlap: float = 1 / 3,
    flip: bool = False,
    max_size: int = 0,
    scales: Sequence[float] = (1.0,),
) -> Tensor:
    """Logits Tensor[B, K, H, W] for images Tensor[B, 3, H, W] of any H, W.

    multiple: pad H, W up to a multiple of this (the backbone's largest stride is safe).
    window:   side of square sliding windows in pixels; 0 = one pass over the whole image.
              Overlapping windows' logits are averaged.
    overlap:  fraction of a window shared with its neighbour.
    flip:     also run the mirrored image and average (horizontal-flip TTA).
    max_size: run the model on the image shrunk so its longest side is at most this (the
              scale it was trained at, ``data.max_size``) and upsample the logits back to
              H x W (bilinear), so predictions and scores are always at input resolution.
    scales:   factors on that scale (multi-scale TTA, e.g. ``(1.0, 1.25)``); the logits of
              every scale, resized back to H x W, are averaged.
    """
    h, w = images.shape[-2:]
    total: Tensor | None = None
    for factor in scales:
        size = scaled_size(h, w, max_size, factor)
        x = images
        if size != (h, w):
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        logits = _predict_at_size(model, x, multiple, window, overlap, flip)
        if size != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total if len(scales) == 1 else total / len(scales)
