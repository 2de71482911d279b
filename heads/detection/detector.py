"""Detector = resize/normalise transform + backbone + detection head.

The model the detection task trains and exports. The head sees only the backbone's
features, so any registered backbone (``timm:`` ones too) works: the head reads channels
and strides from ``backbone.feature_info``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from heads.base import HeadOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DetectorTransform(GeneralizedRCNNTransform):
    """torchvision's resize/normalise/pad transform, except that an image so thin that its
    short side would scale below one pixel (a 10 x 4000 strip at ``max_size`` 256) keeps one
    pixel there, as the exported graph does (``tasks.export.detection``); torchvision's
    ``interpolate`` call fails on a size of 0."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        h, w = image.shape[-2:]
        if min(h, w) * self.max_size >= max(h, w):  # every min_size keeps both sides >= 1 px
            return super().resize(image, target)
        # here the long side sets the scale at every min_size (short * scale < 1 <= min_size)
        scale = self.max_size / max(h, w)
        size = [max(1, math.floor(h * scale)), max(1, math.floor(w * scale))]
        resized = nn.functional.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False
        )[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), (size[0], size[1]))
        return resized, target


class Detector(nn.Module):
    """Images in, boxes out, in the caller's pixel coordinates.

    Args:
        backbone: a ``backbones.base.Backbone`` (forward -> {name: Tensor[B, C, h, w]}).
        head: ``FasterRCNNHead`` or ``FCOSDetectionHead`` built on ``backbone.feature_info``.
        min_size, max_size: each image is resized so its short side is ``min_size`` (a
            tuple: picked at random in training) and its long side at most ``max_size``.
        image_mean, image_std: per-channel normalisation of 0..1 RGB input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.transform = DetectorTransform(
            min_size if isinstance(min_size, int) else tuple(min_size),
            max_size,
            list(image_mean),
            list(image_std),
        )
        self.backbone = backbone
        self.head = head

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> HeadOutput:
        """
        Args:
            images: FloatTensor[3, H_i, W_i] in 0..1 RGB, sizes may differ.
            targets: per image ``boxes`` FloatTensor[N, 4] x1y1x2y2 in that image's pixels and
                ``labels`` Int64Tensor[N] (1-based; N may be 0). Required in training mode.

        Returns ``HeadOutput``: ``preds`` (eval mode; empty list in training mode) holds per
        image ``boxes`` FloatTensor[K, 4] x1y1x2y2 in input pixels, ``scores`` FloatTensor[K],
        ``labels`` Int64Tensor[K]; ``losses`` is filled whenever targets are given.
        """
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        out = self.head(features, batch, targets)
        if out.preds:
            out.preds = self.transform.postprocess(out.preds, batch.image_sizes, original_sizes)
        return out
