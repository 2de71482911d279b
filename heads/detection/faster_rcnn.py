"""Faster R-CNN head: FPN neck + region proposal network + RoI box head, from torchvision parts.

Module names follow torchvision's ``FasterRCNN`` (``fpn`` = its ``backbone.fpn``, ``rpn``,
``roi_heads``), so its state dicts load after a prefix rename (see ``torchvision_key_map``).

Losses and modes: torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` compute losses only
in training mode and detections only in eval mode. This head calls their building blocks
(``filter_proposals``, ``assign_targets_to_anchors``, ``select_training_samples``,
``postprocess_detections``...) itself so that the rule is simpler:

* ``losses`` are computed whenever ``targets`` are given (train *and* eval: validation loss
  works without switching modes);
* ``preds`` are computed in eval mode only; in training mode ``preds`` is an empty list,
  because detections need a second box-head pass and NMS that the loss does not use.

Mode still picks the proposal counts (``rpn_pre/post_nms_top_n`` train vs test), as in
torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import initLevelMapper

from backbones.base import FeatureInfo
from backbones.registry import OptionError
from heads.base import HeadOutput
from heads.detection.common import build_fpn, norm_layer

BOX_HEADS = ("mlp", "conv")


class FasterRCNNHead(nn.Module):
    """features -> (detections, losses).

    Args:
        feature_info: the backbone's levels (e.g. c2..c5); the FPN adds one max-pooled level.
        num_classes: classes including background (labels 1..num_classes-1 are objects).
        anchor_sizes: one anchor size in input pixels per pyramid level (levels + 1 values).
        aspect_ratios: height/width ratios of the anchors, shared by all levels.
        fpn_channels: channels of every pyramid level.
        norm: "none" | "groupnorm" | "batchnorm" for the FPN and (box_head="conv") the box head.
        box_head: "mlp" (torchvision's TwoMLPHead) or "conv" (4 conv + 1 fc, normalised with
            ``norm``: the from-scratch choice).
        representation_size: width of the box head's last fully connected layer.
        rpn_pre_nms_top_n / rpn_post_nms_top_n: proposals kept per level before NMS and per
            image after it, as (train, test).
        box_batch_size_per_image: RoIs sampled per image for the box loss.
        score_thresh, nms_thresh, detections_per_img: detection post-processing.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        fpn_channels: int = 256,
        norm: str = "none",
        box_head: str = "mlp",
        representation_size: int = 1024,
        rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
        rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
        rpn_batch_size_per_image: int = 256,
        box_batch_size_per_image: int = 512,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        levels = len(feature_info) + 1  # + LastLevelMaxPool
        if len(anchor_sizes) != levels:
            raise OptionError(
                f"anchor_sizes has {len(anchor_sizes)} values {list(anchor_sizes)} but the "
                f"pyramid has {levels} levels ({', '.join(f.name for f in feature_info)}, pool); "
                f"give one size per level"
            )
        if box_head not in BOX_HEADS:
            raise OptionError(f"box_head {box_head!r} is not one of {', '.join(BOX_HEADS)}")
        self.fpn = build_fpn(feature_info, fpn_channels, norm=norm, extra_block=LastLevelMaxPool())
        anchors = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes), (tuple(aspect_ratios),) * levels
        )
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(fpn_channels, len(aspect_ratios)),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=0.5,
            pre_nms_top_n=dict(training=rpn_pre_nms_top_n[0], testing=rpn_pre_nms_top_n[1]),
            post_nms_top_n=dict(training=rpn_post_nms_top_n[0], testing=rpn_post_nms_top_n[1]),
            nms_thresh=0.7,
        )
        pool = MultiScaleRoIAlign([f.name for f in feature_info], output_size=7, sampling_ratio=2)
        # torchvision infers each level's scale from the first batch's unpadded image height
        # and keeps it for every later batch: a flat first image (16 x 160, padded to 32 x 160)
        # makes c2 pool at 1/2 instead of 1/4 for the rest of the process. The strides are known.
        strides = [f.stride for f in feature_info]
        pool.scales = [1.0 / s for s in strides]
        pool.map_levels = initLevelMapper(int(math.log2(strides[0])), int(math.log2(strides[-1])))
        if box_head == "mlp":
            head: nn.Module = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
        else:
            head = FastRCNNConvFCHead(
                (fpn_channels, 7, 7),
                [fpn_channels] * 4,
                [representation_size],
                norm_layer=norm_layer(norm),
            )
        self.roi_heads = RoIHeads(
            pool,
            head,
            FastRCNNPredictor(representation_size, num_classes),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )

    def forward(
        self,
        features: Mapping[str, Tensor],
        images: ImageList,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> HeadOutput:
        """
        Args:
            features: backbone levels named as in ``feature_info``, Tensor[B, C, h, w] each.
            images: the resized, padded batch (only ``tensors.shape`` and ``image_sizes`` are
                read: anchors and box clipping need them).
            targets: per image ``boxes`` FloatTensor[N, 4] x1y1x2y2 in ``images`` pixels and
                ``labels`` Int64Tensor[N] in 1..num_classes-1; required in training mode.

        Returns ``HeadOutput(preds, losses)``: preds (eval mode) is one dict per image with
        ``boxes`` FloatTensor[K, 4] x1y1x2y2 in ``images`` pixels, ``scores`` [K], ``labels``
        [K]; losses has ``loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg``
        when targets were given.
        """
        if self.training and targets is None:
            raise ValueError("FasterRCNNHead in training mode needs targets")
        pyramid = self.fpn(dict(features))
        proposals, losses = self._propose(pyramid, images, targets)
        roi = self.roi_heads
        sizes = images.image_sizes
        if targets is not None:
            sampled, _, labels, regression_targets = roi.select_training_samples(proposals, targets)
            logits, deltas = roi.box_predictor(
                roi.box_head(roi.box_roi_pool(pyramid, sampled, sizes))
            )
            cls_loss, box_loss = fastrcnn_loss(logits, deltas, labels, regression_targets)
            losses.update(loss_classifier=cls_loss, loss_box_reg=box_loss)
        preds: list[dict[str, Tensor]] = []
        if not self.training:
            logits, deltas = roi.box_predictor(
                roi.box_head(roi.box_roi_pool(pyramid, proposals, sizes))
            )
            boxes, scores, labels = roi.postprocess_detections(logits, deltas, proposals, sizes)
            preds = [
                dict(boxes=b, scores=s, labels=c)
                for b, s, c in zip(boxes, scores, labels, strict=True)
            ]
        return HeadOutput(preds=preds, losses=losses)

    def _propose(
        self,
        pyramid: Mapping[str, Tensor],
        images: ImageList,
        targets: list[dict[str, Tensor]] | None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """torchvision's ``RegionProposalNetwork.forward`` with the loss keyed on ``targets``."""
        rpn = self.rpn
        levels = list(pyramid.values())
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(images, levels)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        # proposals are not back-propagated through, as in torchvision
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
            regression_targets = rpn.box_coder.encode(matched, anchors)
            obj_loss, box_loss = rpn.compute_loss(objectness, deltas, labels, regression_targets)
            losses = dict(loss_objectness=obj_loss, loss_rpn_box_reg=box_loss)
        return boxes, losses


def torchvision_key_map(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a torchvision ``FasterRCNN`` state dict (``fasterrcnn_resnet50_fpn``) to ours.

    ``backbone.body.*`` -> ``backbone.*`` (our ResNets keep torchvision's layer names),
    ``backbone.fpn.*`` -> ``head.fpn.*``, ``rpn.*`` / ``roi_heads.*`` -> ``head.rpn.*`` /
    ``head.roi_heads.*``. Any other key is an error: it would mean the models differ.
    """
    prefixes = {
        "backbone.body.": "backbone.",
        "backbone.fpn.": "head.fpn.",
        "rpn.": "head.rpn.",
        "roi_heads.": "head.roi_heads.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = value
                break
        else:
            raise KeyError(f"torchvision key {key!r} has no counterpart in our detector")
    return out
