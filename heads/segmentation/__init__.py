"""Semantic segmentation heads, chosen by name with ``SEG_HEADS.create(name, ...)``.

Every head is built as ``(feature_info, num_classes, *, loss=..., ...)`` and returns
``HeadOutput(preds=logits Tensor[B, K, H, W], losses)`` at the size it is given.
"""

from __future__ import annotations

from backbones.registry import Registry
from heads.segmentation.base import FCNAuxHead, SegmentationHead
from heads.segmentation.deeplab import DeepLabV3Head, DeepLabV3PlusHead
from heads.segmentation.loss import SegmentationLoss
from heads.segmentation.model import SegmentationModel, from_torchvision_state_dict
from heads.segmentation.pspnet import PSPHead

SEG_HEADS: Registry[type[SegmentationHead]] = Registry("segmentation head")
SEG_HEADS.register("deeplabv3")(DeepLabV3Head)
SEG_HEADS.register("deeplabv3plus")(DeepLabV3PlusHead)
SEG_HEADS.register("pspnet")(PSPHead)
SEG_HEADS.register("fcn")(FCNAuxHead)

__all__ = [
    "SEG_HEADS",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "FCNAuxHead",
    "PSPHead",
    "SegmentationHead",
    "SegmentationLoss",
    "SegmentationModel",
    "from_torchvision_state_dict",
]
