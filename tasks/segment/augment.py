"""Mask-aware augmentation (albumentations) and the image normalisation every path shares.

Train: optional longest-side shrink (``data.max_size``; smaller images keep their size, as
evaluation keeps them) -> random scale -> pad to the crop
(image 0, mask ignore_index) -> random crop -> flips -> colour jitter. The mask always gets
nearest-neighbour interpolation, so labels are never blended. Eval: no geometry at all (whole
images; the collate function pads a batch, ``tasks.segment.infer`` shrinks to ``max_size``
and pads to the output stride).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor

from tasks.augment import seeded
from tasks.images import DataError
from tasks.segment.infer import scaled_size

MEAN = (0.485, 0.456, 0.406)  # ImageNet channel means (RGB, 0..1): backbones are trained so
STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] RGB -> float Tensor[3, H, W], ImageNet mean/std normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def mask_dtype(ignore_index: int, num_classes: int = 0) -> type:
    """uint8 when every label (0..num_classes-1 and ignore_index) fits (fast cv2 paths), else
    uint16 (masks are PNGs: labels never exceed 65535)."""
    return np.uint8 if max(ignore_index, num_classes - 1) <= 255 else np.uint16


def build_transform(
    *,
    train: bool,
    ignore_index: int,
    num_classes: int = 0,
    crop_size: int = 512,
    max_size: int = 0,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    vflip: float = 0.0,
    color_jitter: float = 0.2,
) -> PairTransform:
    """A callable ``(image uint8 [H, W, 3], mask [H, W]) -> (Tensor[3, h, w], LongTensor[h, w])``.

    crop_size:    side of the square training crop in pixels; 0 = no crop (whole images).
    max_size:     shrink so the longest side is at most this many pixels first (never
                  enlarges: evaluation runs smaller images at their own size); 0 = off.
                  Training only: evaluation runs the model at that scale inside
                  ``tasks.segment.infer.predict_logits`` and scores at full resolution.
    scale:        random rescale factor range (1.0, 1.0 = off).
    hflip, vflip: flip probabilities.
    color_jitter: brightness/contrast/saturation strength (0.2 = factors in 0.8..1.2); 0 = off.
    num_classes:  the label space size; with ``ignore_index`` it picks the mask dtype for
                  albumentations (uint8 when every label fits, else uint16).
    With ``train=False`` the image is only normalised.
    """
    ops: list[A.BasicTransform] = []
    if train:
        if tuple(scale) != (1.0, 1.0):
            ops.append(A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), p=1.0))
        if crop_size > 0:
            ops.append(
                A.PadIfNeeded(
                    crop_size,
                    crop_size,
                    position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=ignore_index,
                )
            )
            ops.append(A.RandomCrop(crop_size, crop_size))
        if hflip > 0:
            ops.append(A.HorizontalFlip(p=hflip))
        if vflip > 0:
            ops.append(A.VerticalFlip(p=vflip))
        if color_jitter > 0:
            j = color_jitter
            ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=0.8))
    return PairTransform(
        A.Compose(ops) if ops else None,
        mask_dtype(ignore_index, num_classes),
        max_size=max_size if train else 0,
        min_scale=min(scale) if train and tuple(scale) != (1.0, 1.0) else 1.0,
    )


class PairTransform:
    """An albumentations pipeline applied to (image, mask), then normalised to tensors.
    A class rather than a closure so DataLoader workers can pickle it.

    max_size: images whose longest side is larger are shrunk to it first (image bilinear,
    mask nearest; sizes rounded as ``infer.scaled_size``, the evaluation scale); smaller
    ones are kept. min_scale: the smallest random scale factor; a side it would shrink to
    0 pixels is a DataError (cv2 would fail deep inside albumentations)."""

    def __init__(
        self, pipeline: A.Compose | None, dtype: type, max_size: int = 0, min_scale: float = 1.0
    ) -> None:
        self.pipeline, self.dtype = pipeline, dtype
        self.max_size, self.min_scale = max_size, min_scale

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        mask = mask.astype(self.dtype)
        if self.max_size > 0:
            h, w = scaled_size(*image.shape[:2], self.max_size)
            if (h, w) != image.shape[:2]:
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        if min(image.shape[:2]) * self.min_scale < 1:
            h, w = image.shape[:2]
            shrunk = f" after data.max_size={self.max_size}" if self.max_size else ""
            raise DataError(
                f"image of {w}x{h} pixels{shrunk} would be scaled to 0 pixels by data.scale "
                f"minimum {self.min_scale}; expected images whose sides stay >= 1 pixel (remove "
                "the image, or raise the data.scale minimum to 1.0)"
            )
        if self.pipeline is not None:
            out = seeded(self.pipeline, image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return normalize(image), torch.from_numpy(mask.astype(np.int64))
