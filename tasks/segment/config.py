"""Typed configuration of the segmentation task (``model``, ``data``, ``train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 - OmegaConf structured configs need typing forms

from tasks.config import TrainConfig


@dataclass
class SegmentModelConfig:
    backbone: str = "resnet18"  # any name in backbones.list_backbones(), or "timm:<name>"
    backbone_weights: Optional[str] = None  # noqa: UP045 - checkpoint loaded into model.backbone
    head: str = "deeplabv3plus"  # "deeplabv3", "deeplabv3plus" or "pspnet"
    output_stride: int = 16  # 8 or 16: deepest stride (dilated last stages); 32 = no dilation
    norm: str = "batchnorm"  # backbone norm: "batchnorm", "frozen_batchnorm" or "groupnorm"
    channels: int = 0  # head width (ASPP/decoder, PSP bottleneck); 0 = the head's default (256/512)
    aux_loss: bool = False  # auxiliary FCN head on the second-deepest level (c4), training only
    aux_weight: float = 0.4  # weight of the auxiliary loss
    dice_weight: float = 0.0  # weight of a soft Dice term added to cross-entropy; 0 = off
    lovasz_weight: float = 0.0  # weight of a Lovasz-softmax (IoU surrogate) term; 0 = off
    class_weights: List[float] = field(default_factory=list)  # noqa: UP006 - CE weight per class; [] = none


@dataclass
class SegmentDataConfig:
    train: Optional[str] = None  # noqa: UP045 - folder / VOC / COCO root; None = synthetic shapes
    val: Optional[str] = None  # noqa: UP045 - same layouts; None = VOC "val" list or hold-out
    val_fraction: float = 0.2  # hold-out of train when val is not given (folder / COCO)
    split_seed: int = 0  # seed of that hold-out
    num_classes: int = 0  # label space size incl. background; 0 = scan masks (COCO: categories + 1)
    class_names: List[str] = field(default_factory=list)  # noqa: UP006 - [] = "0".."K-1" or from COCO
    ignore_index: int = 255  # void label: not trained on, not scored; pads use it
    palette: List[List[int]] = field(default_factory=list)  # noqa: UP006 - RGB masks: [[r,g,b](,label)] per class
    mask_values: List[int] = field(default_factory=list)  # noqa: UP006 - stored value of each class,
    # e.g. [0, 255] for black-and-white masks; [] = values are class indices. JPEG masks need it
    crop_size: int = 512  # training crop side in pixels (smaller images are padded); 0 = none
    max_size: int = 0  # longest side at most this: training images are resized, evaluation and
    # prediction run the model at this scale and upsample logits back (scored at full size); 0 = off
    scale: List[float] = field(default_factory=lambda: [0.5, 2.0])  # noqa: UP006 - random rescale range
    hflip: float = 0.5  # horizontal flip probability
    vflip: float = 0.0  # vertical flip probability
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; 0 = off
    eval_window: int = 0  # sliding-window side in pixels at evaluation/prediction; 0 = whole image
    eval_flip: bool = False  # horizontal-flip test-time augmentation
    eval_scales: List[float] = field(default_factory=lambda: [1.0])  # noqa: UP006 - multi-scale
    # TTA: factors on the evaluation scale (max_size), logits averaged; [1.0] = one scale
    in_memory: bool = False  # decode every image and mask once at start-up and keep them in
    # RAM (about H * W * 4 bytes each; loader workers share them): small data sets
    synthetic_train: int = 512  # synthetic shapes: training images
    synthetic_val: int = 128  # synthetic shapes: validation images
    synthetic_size: int = 128  # synthetic shapes: image side in pixels


def _segment_train() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine"
    )


@dataclass
class SegmentConfig:
    model: SegmentModelConfig = field(default_factory=SegmentModelConfig)
    data: SegmentDataConfig = field(default_factory=SegmentDataConfig)
    train: TrainConfig = field(default_factory=_segment_train)
