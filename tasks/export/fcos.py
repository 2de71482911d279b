"""A batched, exportable inference path of ``Detector`` + ``FCOSDetectionHead``.

torchvision's ``FCOS.postprocess_detections`` loops over images and levels in Python and
keeps a data-dependent number of candidates per level, so a traced graph would be frozen to
the traced batch. This module computes the same detections with whole-batch tensor ops, the
resize/normalise/pad and the final per-class ``NonMaxSuppression`` shared with Faster R-CNN
(``DetectorExport``):

* points ("anchors", one per location, as large as the level's stride) of ONE image from the
  head's ``AnchorGenerator`` (they depend only on the padded batch shape), shared by the batch;
* per level, the score of every (point, class) pair is ``sqrt(sigmoid(cls) * sigmoid(ctrness))``
  and the best ``topk_candidates`` pairs are kept. torchvision keeps the best of those above
  ``score_thresh``: the same set once the NMS drops every score at or below ``score_thresh``;
* boxes decoded with the head's ``BoxLinearCoder`` and clipped to the resized image.

Column 0 (background) is masked as in the eager head (``mask_background``): labels are
1-based object classes, as Faster R-CNN's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.models.detection.image_list import ImageList

from heads.detection.fcos import mask_background
from tasks.export.detection import DetectorExport, _clip


class FCOSExport(DetectorExport):
    """``images uint8 [B, 3, H, W] -> (boxes [B, D, 4], scores [B, D], labels int64 [B, D],
    num_detections int64 [B])``; boxes x1y1x2y2 in input pixels, rows past ``num_detections``
    are zero, ``D = detections_per_img``. Same detections as ``Detector`` in eval mode."""

    def __init__(self, detector: nn.Module) -> None:
        head = detector.head
        super().__init__(detector, head.detections_per_img)
        self.fpn, self.head, self.points = head.fpn, head.head, head.anchor_generator
        self.box_coder = head.box_coder
        self.topk_candidates = head.topk_candidates
        self.score_thresh, self.nms_thresh = head.score_thresh, head.nms_thresh

    def _candidates(
        self, x: Tensor, levels: list[Tensor], size: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Padded batch ``x [B, 3, Hp, Wp]`` and its pyramid -> per image the best
        ``topk_candidates`` (point, class) pairs of every level: boxes ``[B, K, 4]`` clipped
        to the resized ``size`` (height, width), scores ``[B, K]``, labels int64 ``[B, K]``."""
        out = self.head(levels)  # cls_logits [B, N, C], bbox_regression [B, N, 4],
        # bbox_ctrness [B, N, 1]; N points over all levels, level-major
        points = self.points(ImageList(x, [(x.shape[-2], x.shape[-1])]), levels)[0]  # [N, 4]
        logits = mask_background(out["cls_logits"])
        scores = torch.sqrt(logits.sigmoid() * out["bbox_ctrness"].sigmoid())
        classes = scores.shape[-1]
        scores = scores.flatten(1)  # [B, N * C], (point, class) pairs point-major
        top, offset = [], 0
        for level in levels:
            count = level.shape[2] * level.shape[3] * classes
            part = scores[:, offset : offset + count]
            k = _topk_min(part, self.topk_candidates, 1)
            top.append(part.topk(k, dim=1).indices + offset)
            offset = offset + count
        idx = torch.cat(top, 1)
        point = torch.div(idx, classes, rounding_mode="floor")
        deltas = out["bbox_regression"].gather(1, point[..., None].expand(-1, -1, 4))
        boxes = _clip(self.box_coder.decode(deltas, points[point]), *size)
        return boxes, scores.gather(1, idx), idx % classes

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, new_h, new_w = self._resize(images)
        levels = list(self.fpn(dict(self.backbone(x))).values())
        candidates = self._candidates(x, levels, (new_h, new_w))
        return self._detections(
            images, (new_h, new_w), candidates, self.nms_thresh, self.score_thresh
        )
