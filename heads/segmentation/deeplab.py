"""DeepLabV3 (ASPP on the deepest features) and DeepLabV3+ (adds a stride-4 decoder).

Both reuse torchvision's ``ASPP`` (1x1 conv, three atrous 3x3 convs, image pooling, 1x1
projection) with rates matched to the deepest feature's stride. DeepLabV3's ``classifier`` is
torchvision's ``DeepLabHead`` itself, so torchvision ``classifier.*`` keys load as
``head.classifier.*`` (see ``heads.segmentation.model.from_torchvision_state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from backbones.base import FeatureInfo
from heads.segmentation.base import SegmentationHead, atrous_rates, find_feature
from heads.segmentation.loss import SegmentationLoss


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU, padded to keep the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeepLabV3Head(SegmentationHead):
    """ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv on the deepest feature (last of feature_info).

    feature_info: the backbone's declared levels; the last one is used (e.g. c5, 2048 ch).
    rates:        ASPP dilation rates; None = matched to that level's stride.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        rates: Sequence[int] | None = None,
        loss: SegmentationLoss | None = None,
    ) -> None:
        super().__init__(loss)
        deep = feature_info[-1]
        self.feature = deep.name
        self.rates = tuple(rates) if rates else atrous_rates(deep.stride)
        self.classifier = DeepLabHead(deep.channels, num_classes, self.rates)

    def logits(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(features[self.feature])


class DeepLabV3PlusHead(SegmentationHead):
    """DeepLabV3+: ASPP on the deepest level, upsampled and fused with projected ``c2``.

    decoder: concat(upsampled ASPP [256 ch], 1x1-projected low-level [48 ch]) -> two 3x3 conv
    -> 1x1 classifier at stride 4 (Chen et al. 2018, section 3.1).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        rates: Sequence[int] | None = None,
        low_level: str = "c2",
        low_level_channels: int = 48,
        channels: int = 256,
        loss: SegmentationLoss | None = None,
    ) -> None:
        super().__init__(loss)
        deep = feature_info[-1]
        low = find_feature(feature_info, low_level)
        self.feature, self.low_feature = deep.name, low.name
        self.rates = tuple(rates) if rates else atrous_rates(deep.stride)
        self.aspp = ASPP(deep.channels, self.rates, channels)
        self.project = conv_bn_relu(low.channels, low_level_channels, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + low_level_channels, channels, 3),
            conv_bn_relu(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def logits(self, features: Mapping[str, Tensor]) -> Tensor:
        low = self.project(features[self.low_feature])
        deep = self.aspp(features[self.feature])
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([deep, low], dim=1)))
