"""Typed configuration of the classification task (``model``, ``data``, ``train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 - OmegaConf structured configs need typing forms

from tasks.config import TrainConfig

# Mean/std of ImageNet in 0..255 pixel units (what pretrained torchvision/timm weights expect).
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


@dataclass
class ClassifyModelConfig:
    backbone: str = "resnet20"  # any name in backbones.list_backbones(), or "timm:<name>"
    backbone_weights: Optional[str] = None  # noqa: UP045 - checkpoint loaded into model.backbone
    norm: str = "batchnorm"  # "batchnorm", "frozen_batchnorm" or "groupnorm"
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linear in depth)
    zero_init_residual: bool = True  # last BN of each residual branch starts at 0
    dropout: float = 0.0  # before the classifier's linear layer
    pool: str = "avg"  # global pooling: "avg" or "max"
    logit_scale: float = 1.0  # multiplies the logits (airbench-style nets use 1/9)
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # noqa: UP006 - 0..255
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))  # noqa: UP006 - 0..255


@dataclass
class ClassifyDataConfig:
    train: Optional[str] = None  # noqa: UP045 - ImageFolder root; None = built-in synthetic set
    val: Optional[str] = None  # noqa: UP045 - ImageFolder root; None = hold out val_fraction
    val_fraction: float = 0.1  # stratified hold-out of train when val is not given
    split_seed: int = 0  # seed of that hold-out (same seed -> same split)
    image_size: int = 32  # images are resized to image_size x image_size pixels on load
    augment: str = (
        "cifar"  # "cifar" (pad-crop-flip), "imagenet" (random-resized-crop+flip), "flip", "none"
    )
    pad: int = 4  # pixels of reflect padding for the "cifar" preset
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # noqa: UP006 - RRC area
    # progressive resizing: [[fraction, size], ...] trains on size x size px from that fraction
    # of the run on (e.g. [[0, 16], [0.25, 24], [0.5, 32]]); [] = always image_size
    progressive: List[List[float]] = field(default_factory=list)  # noqa: UP006
    mixup: float = 0.0  # mixup alpha; 0 = off
    cutmix: float = 0.0  # cutmix alpha; 0 = off
    tta_flip: bool = False  # average logits of the image and its mirror at evaluation
    tta_translate: int = 0  # also average views shifted +-N px (airbench's TTA); 0 = off
    skip_bad: bool = False  # skip (and count) unreadable images instead of stopping
    cache_dir: str = "~/.cache/resvision"  # decoded-image cache; "" = off
    decode_workers: int = 0  # decoding threads; 0 = 2 x CPU cores (at most 16)
    synthetic_classes: int = 10  # synthetic set (used when train is None): classes
    synthetic_train_per_class: int = 300  # synthetic training images per class
    synthetic_val_per_class: int = 50  # synthetic validation images per class


def _classify_train() -> TrainConfig:
    # channels_last: oneDNN's small-channel convolutions (CIFAR nets' 16-64) train ~1.2x faster
    # in NHWC on the CPU too (docs/benchmarks.md, "Engine training throughput")
    return TrainConfig(
        epochs=8,
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        schedule="onecycle",
        channels_last=True,
    )


@dataclass
class ClassifyConfig:
    model: ClassifyModelConfig = field(default_factory=ClassifyModelConfig)
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    train: TrainConfig = field(default_factory=_classify_train)
