"""PSPNet head: pyramid pooling over 1x1, 2x2, 3x3 and 6x6 bins of the deepest feature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import FeatureInfo
from heads.segmentation.base import SegmentationHead
from heads.segmentation.deeplab import conv_bn_relu
from heads.segmentation.loss import SegmentationLoss


def _bin_weights(size: Tensor | int, bins: int, like: Tensor) -> Tensor:
    """Tensor[bins, size]: row i averages the pixels ``AdaptiveAvgPool2d`` puts in bin i
    (``floor(i * size / bins)`` up to ``ceil((i + 1) * size / bins)``)."""
    index = torch.arange(bins, device=like.device)
    start = torch.div(index * size, bins, rounding_mode="floor")
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(size, device=like.device)[None]
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(bins)`` as two matrix products, so that an exported graph keeps
    its height and width dynamic (the ONNX exporter refuses adaptive pooling to more than one
    bin on a size it cannot read): Tensor[B, C, H, W] -> Tensor[B, C, bins, bins]."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: Tensor) -> Tensor:
        rows = _bin_weights(x.shape[-2], self.bins, x)
        cols = _bin_weights(x.shape[-1], self.bins, x)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """Average-pool to each bin size, 1x1-reduce to ``in_channels // len(bins)``, upsample and
    concatenate with the input: Tensor[B, C, h, w] -> Tensor[B, 2C, h, w] (Zhao et al. 2017)."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(b), conv_bn_relu(in_channels, reduced, 1)) for b in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(SegmentationHead):
    """Pyramid pooling -> 3x3 conv (``channels``) -> BN -> ReLU -> dropout 0.1 -> 1x1 conv."""

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        loss: SegmentationLoss | None = None,
    ) -> None:
        super().__init__(loss)
        deep = feature_info[-1]
        self.feature = deep.name
        self.ppm = PyramidPooling(deep.channels, bins)
        self.bottleneck = conv_bn_relu(self.ppm.out_channels, channels, 3)
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def logits(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(self.bottleneck(self.ppm(features[self.feature])))
