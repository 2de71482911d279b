"""Shared behaviour of segmentation heads: pick features, upsample logits, compute losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.fcn import FCNHead

from backbones.base import FeatureInfo
from backbones.registry import OptionError
from heads.base import HeadOutput
from heads.segmentation.loss import SegmentationLoss


def find_feature(feature_info: Sequence[FeatureInfo], name: str) -> FeatureInfo:
    """The entry called ``name``; a clear error lists the levels the backbone returns."""
    for info in feature_info:
        if info.name == name:
            return info
    have = ", ".join(f"{f.name} (stride {f.stride})" for f in feature_info)
    raise OptionError(
        f"this head needs backbone feature {name!r} but the backbone returns only {have}; "
        "create the backbone with out_indices that include it"
    )


def atrous_rates(stride: int) -> tuple[int, int, int]:
    """ASPP rates matched to the feature stride: (6, 12, 18) at 16, (12, 24, 36) at 8.

    The rates scale with the feature-map resolution so the receptive fields cover the same
    fraction of the image (DeepLabV3 paper, section 3.3); stride 32 gives (3, 6, 9).
    """
    return tuple(max(1, r * 16 // stride) for r in (6, 12, 18))  # type: ignore[return-value]


class SegmentationHead(nn.Module):
    """Base class: ``forward(features, targets=None, *, size) -> HeadOutput``.

    Subclasses implement ``logits(features) -> Tensor[B, K, h, w]`` at feature resolution.
    ``forward`` upsamples them bilinearly to ``size`` (the input's (H, W)) so ``preds`` are
    Tensor[B, K, H, W]; with ``targets`` (LongTensor[B, H, W], void = ``ignore_index``) it
    also returns the losses of ``loss`` (default: plain cross-entropy).
    """

    def __init__(self, loss: SegmentationLoss | None = None) -> None:
        super().__init__()
        self.loss = loss if loss is not None else SegmentationLoss()

    def logits(self, features: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        features: Mapping[str, Tensor],
        targets: Tensor | None = None,
        *,
        size: tuple[int, int] | None = None,
    ) -> HeadOutput:
        if size is None:
            if targets is None:
                raise ValueError("pass size=(H, W) of the input images (or targets)")
            size = tuple(targets.shape[-2:])
        logits = F.interpolate(
            self.logits(features), size=size, mode="bilinear", align_corners=False
        )
        losses = self.loss(logits, targets) if targets is not None else {}
        return HeadOutput(preds=logits, losses=losses)


class FCNAuxHead(SegmentationHead):
    """FCN head (3x3 conv -> BN -> ReLU -> dropout -> 1x1) on ``feature`` (default: the
    deepest level). The cheapest head; as the auxiliary head it reads ``c4``.

    ``classifier`` is torchvision's ``FCNHead``, so torchvision's ``aux_classifier.*`` keys map
    onto ``aux_head.classifier.*`` unchanged.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        feature: str | None = None,
        loss: SegmentationLoss | None = None,
    ) -> None:
        super().__init__(loss)
        info = find_feature(feature_info, feature) if feature else feature_info[-1]
        self.feature = info.name
        self.classifier = FCNHead(info.channels, num_classes)

    def logits(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(features[self.feature])
