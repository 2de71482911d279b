"""FCOS head (one-stage, anchor-free): FPN with P6/P7 + torchvision's ``FCOSHead``.

Target matching and decoding are torchvision's ``FCOS.compute_loss`` and
``FCOS.postprocess_detections``; they only read attributes this module also has
(``head``, ``box_coder``, ``center_sampling_radius``, ``score_thresh``, ``nms_thresh``,
``topk_candidates``, ``detections_per_img``), so they are called on it directly instead of
being copied. Same mode rule as ``FasterRCNNHead``: losses whenever targets are given,
detections in eval mode only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from backbones.base import FeatureInfo
from backbones.registry import OptionError
from heads.base import HeadOutput
from heads.detection.common import build_fpn


def mask_background(cls_logits: Tensor) -> Tensor:
    """``cls_logits [B, N, C]`` with column 0 set to -inf. Column 0 is background: it is
    never a positive, so it must never come out as a detection (torchvision's FCOS, where
    every column is a class, would return it as label 0)."""
    background = torch.full_like(cls_logits[..., :1], float("-inf"))
    return torch.cat([background, cls_logits[..., 1:]], dim=-1)


class FCOSDetectionHead(nn.Module):
    """features -> (detections, losses), one-stage.

    Args:
        feature_info: the backbone's levels; P6 and P7 are added on top of the last one.
        num_classes: classes including background (label 0 is never a positive).
        fpn_channels: channels of every pyramid level (FCOSHead uses GroupNorm(32, C):
            a multiple of 32, at least 64).
        norm: the FPN's norm ("none" | "groupnorm" | "batchnorm").
        num_convs: conv layers in each FCOS tower.
        center_sampling_radius, score_thresh, nms_thresh, topk_candidates,
            detections_per_img: as in torchvision's ``FCOS``.

    Each level's "anchor" is a point whose size equals the level's stride (read from
    ``feature_info``); FCOS's scale ranges are multiples of it.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        fpn_channels: int = 256,
        norm: str = "none",
        num_convs: int = 4,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.2,
        nms_thresh: float = 0.6,
        topk_candidates: int = 1000,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if fpn_channels % 32 or fpn_channels < 64:
            # GroupNorm(32, 32) has one value per group on a 1x1 level (P7 of a 128-pixel
            # image), which torch refuses even in eval: one image alone could not be detected
            raise OptionError(
                f"fcos needs fpn_channels divisible by 32 and at least 64, got {fpn_channels}"
            )
        self.fpn = build_fpn(
            feature_info,
            fpn_channels,
            norm=norm,
            extra_block=LastLevelP6P7(fpn_channels, fpn_channels),
        )
        last = feature_info[-1].stride
        strides = [f.stride for f in feature_info] + [last * 2, last * 4]
        self.anchor_generator = AnchorGenerator(
            tuple((s,) for s in strides), ((1.0,),) * len(strides)
        )
        self.head = FCOSHead(fpn_channels, 1, num_classes, num_convs=num_convs)
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.detections_per_img = detections_per_img

    def forward(
        self,
        features: Mapping[str, Tensor],
        images: ImageList,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> HeadOutput:
        """Same arguments and outputs as ``FasterRCNNHead.forward``; losses are
        ``classification, bbox_regression, bbox_ctrness``."""
        if self.training and targets is None:
            raise ValueError("FCOSDetectionHead in training mode needs targets")
        levels = list(self.fpn(dict(features)).values())
        outputs = self.head(levels)
        anchors = self.anchor_generator(images, levels)
        per_level = [x.size(2) * x.size(3) for x in levels]
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses = FCOS.compute_loss(self, targets, outputs, anchors, per_level)
        preds: list[dict[str, Tensor]] = []
        if not self.training:
            scored = {**outputs, "cls_logits": mask_background(outputs["cls_logits"])}
            split = {k: list(v.split(per_level, dim=1)) for k, v in scored.items()}
            split_anchors = [list(a.split(per_level)) for a in anchors]
            preds = FCOS.postprocess_detections(self, split, split_anchors, images.image_sizes)
        return HeadOutput(preds=preds, losses=losses)
