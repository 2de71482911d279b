"""Box-aware training augmentation (albumentations), configured from YAML.

Boxes travel with the pixels: flips mirror them, scaling scales them, the crop never cuts an
object out (``BBoxSafeRandomCrop`` keeps every box whole; on an image without boxes it is a
plain random crop). Final resizing to the model's input size happens inside the model
(``GeneralizedRCNNTransform``), so augmented images may have any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A

from tasks.config import ConfigError


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each training augmentation; all off = no augmentation."""

    hflip: float = 0.5  # probability of a horizontal flip
    scale_min: float = 1.0  # RandomScale factor range [scale_min, scale_max]; 1, 1 = off
    scale_max: float = 1.0
    crop: float = 0.0  # probability of a random crop that keeps every box whole
    color: float = 0.0  # ColorJitter brightness/contrast/saturation strength (0.2 = +-20%)


def build_augment(cfg: AugmentConfig) -> A.Compose | None:
    """The training pipeline for ``image`` uint8 [H, W, 3], ``bboxes`` x1y1x2y2 pixels and the
    per-box fields ``labels``, ``iscrowd``; None when every augmentation is off."""
    ops: list[A.BasicTransform] = []
    if cfg.scale_min > cfg.scale_max or cfg.scale_min <= 0:
        raise ConfigError(
            f"data.augment.scale_min={cfg.scale_min}, scale_max={cfg.scale_max}: expected "
            "0 < scale_min <= scale_max"
        )
    if (cfg.scale_min, cfg.scale_max) != (1.0, 1.0):
        ops.append(A.RandomScale(scale_limit=(cfg.scale_min - 1, cfg.scale_max - 1), p=1.0))
    if cfg.crop > 0:
        ops.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=cfg.crop))
    if cfg.hflip > 0:
        ops.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.color > 0:
        c = cfg.color
        ops.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=0.0, p=0.8))
    if not ops:
        return None
    boxes = A.BboxParams(
        format="pascal_voc", label_fields=["labels", "iscrowd"], min_area=1.0, clip=True
    )
    return A.Compose(ops, bbox_params=boxes)
