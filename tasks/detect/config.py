"""Typed configuration of the detection task (``model``, ``data``, ``train``).

The defaults are the synthetic-shapes recipe that ``make demo`` trains on a 2-core CPU in
4 minutes (ResNet-18 with GroupNorm from scratch, 128 px images, a slim FPN and few
proposals); ``configs/detect/pennfudan.yaml`` shows a real-data recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 - OmegaConf structured configs need typing forms

from tasks.config import TrainConfig
from tasks.detect.augment import AugmentConfig


@dataclass
class DetectModelConfig:
    backbone: str = "resnet18"  # any name in backbones.list_backbones(), or "timm:<name>"
    backbone_weights: Optional[str] = None  # noqa: UP045 - checkpoint loaded into model.backbone
    head: str = "faster_rcnn"  # "faster_rcnn" (two-stage) or "fcos" (one-stage)
    norm: str = "batchnorm"  # backbone norm: "frozen_batchnorm" to fine-tune, else batch/groupnorm
    head_norm: str = "groupnorm"  # FPN and conv box head norm: "none", "groupnorm", "batchnorm"
    frozen_stages: int = -1  # -1 none; k freezes the stem and stages 1..k (torchvision: 1)
    out_indices: List[int] = field(default_factory=lambda: [2, 3, 4])  # noqa: UP006 - c3..c5
    fpn_channels: int = 64  # channels of every pyramid level (torchvision: 256)
    # Faster R-CNN: one anchor size (pixels of the resized input) per level, levels + 1 (pool)
    anchor_sizes: List[int] = field(default_factory=lambda: [16, 32, 64, 128])  # noqa: UP006
    aspect_ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # noqa: UP006
    rpn_pre_nms_top_n_train: int = 300  # proposals per level before NMS (torchvision: 2000)
    rpn_pre_nms_top_n_test: int = 300  # (torchvision: 1000)
    rpn_post_nms_top_n_train: int = 200  # proposals per image after NMS (torchvision: 2000)
    rpn_post_nms_top_n_test: int = 100  # (torchvision: 1000)
    rpn_batch_size_per_image: int = 128  # anchors sampled per image for the RPN loss
    box_batch_size_per_image: int = 64  # RoIs sampled per image for the box loss (tv: 512)
    box_head: str = "mlp"  # "mlp" (torchvision's TwoMLPHead) or "conv" (4 conv + fc, normed)
    representation_size: int = 256  # box head's last fully connected width (torchvision: 1024)
    min_size: int = 128  # short side of the network input, pixels (torchvision: 800)
    max_size: int = 256  # cap on the long side, pixels (torchvision: 1333)
    score_thresh: float = 0.05  # detections scoring below are dropped
    nms_thresh: float = 0.5  # per-class NMS IoU of the final detections
    detections_per_img: int = 100  # kept per image, best first


@dataclass
class DetectDataConfig:
    train: Optional[str] = None  # noqa: UP045 - COCO / VOC / VOCdevkit folder; None = shapes
    val: Optional[str] = None  # noqa: UP045 - same layouts; None = hold out val_fraction
    val_fraction: float = 0.2  # random hold-out of train when val is not given
    split_seed: int = 0  # seed of that hold-out
    classes: List[str] = field(default_factory=list)  # noqa: UP006 - [] = names from data.train
    fix_boxes: bool = False  # clip boxes to the image and drop empty/NaN ones (and count them)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    shapes_train: int = 2000  # synthetic training images (used when train is None)
    shapes_val: int = 200  # synthetic validation images
    shapes_size: int = 128  # synthetic image side, pixels
    vis_images: int = 8  # validation images drawn by visualize()


def _detect_train() -> TrainConfig:
    return TrainConfig(
        epochs=12, batch_size=8, optimizer="adamw", lr=2e-3, weight_decay=1e-4, clip_grad=10.0,
        warmup=0.05, log_every=10,
    )  # fmt: skip


@dataclass
class DetectConfig:
    model: DetectModelConfig = field(default_factory=DetectModelConfig)
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    train: TrainConfig = field(default_factory=_detect_train)
