"""A batched, exportable inference path of ``Detector`` + ``FasterRCNNHead``.

torchvision's Faster R-CNN inference loops over images in Python (proposal filtering, box
post-processing, RoI pooling inputs) and reads image sizes as Python numbers, so a traced
graph is frozen to the traced batch size. This module computes the same detections with
whole-batch tensor ops and two ``NonMaxSuppression`` operators (one for the RPN, one for the
final per-class NMS), so batch, height and width stay dynamic in the ONNX graph:

* resize: the short side to ``min_size``, the long side capped at ``max_size`` (the scale
  computed from the traced input shape, as ``GeneralizedRCNNTransform`` does), then zero
  padding to a multiple of 32. All images of one batch share their size, hence their scale.
* anchors: torchvision's ``AnchorGenerator`` for ONE image (anchors depend only on the
  padded batch shape), shared by the batch.
* NMS: one ``NonMaxSuppression`` over ``[B, N, 4]`` boxes, the level (RPN) or class
  (detections) separated by the coordinate-offset trick; its ``[K, 3]`` output (batch,
  class, box) feeds ``RoiAlign`` with batch indices directly.

Outputs are padded to ``detections_per_img`` per image, with a per-image count.
``DetectorExport`` holds what every detector export shares (the resize/normalise/pad above and
the final per-class NMS into padded outputs); ``tasks.export.fcos`` builds FCOS on it.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import roi_align

from tasks.export.wrappers import ResizeTo, scale64


class BatchedNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` with one class: boxes ``[B, N, 4]`` x1y1x2y2, scores
    ``[B, 1, N]`` -> selected ``int64 [K, 3]`` rows (batch, 0, box index), grouped by batch,
    best score first, at most ``max_out`` per batch, boxes scoring <= ``score_thresh`` dropped.
    Eager mode computes the same with ``torchvision.ops.nms`` image by image."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int, iou: float, thresh: float):  # noqa: ANN001
        rows = []
        for b in range(boxes.shape[0]):
            idx = torch.nonzero(scores[b, 0] > thresh).flatten()
            sel = idx[torchvision.ops.nms(boxes[b, idx], scores[b, 0, idx], iou)[:max_out]]
            rows.append(torch.stack([torch.full_like(sel, b), torch.zeros_like(sel), sel], 1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_out: int, iou: float, thresh: float):  # noqa: ANN001, ANN205
        def const(value: float | int, dtype: torch.dtype):  # noqa: ANN202
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            const(max_out, torch.int64),
            const(iou, torch.float32),
            const(thresh, torch.float32),
        )


def _batched_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, max_out: int, iou: float, thresh: float
) -> Tensor:
    """NMS within each ``groups`` value of boxes ``[B, N, 4]``, scores ``[B, N]``: the groups
    are moved apart by an offset larger than any coordinate (torchvision's trick)."""
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return BatchedNMS.apply(boxes + offsets[..., None], scores[:, None], max_out, iou, thresh)


def _clip(boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Clip x1y1x2y2 ``boxes [..., 4]`` to the image; the limits stay graph values (torchvision's
    ``clip_boxes_to_image`` turns them into constants while tracing)."""
    limit = torch.stack([width, height, width, height]).to(boxes)
    return torch.minimum(boxes.clamp(min=0), limit)


def _pad_per_image(sel_batch: Tensor, batch: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Flat rows grouped by batch index ``sel_batch [K]`` -> (slot in a ``[B * slots]``
    padded layout ``[K]``, count per image ``[B]``)."""
    one_hot = sel_batch[None, :] == torch.arange(batch, device=sel_batch.device)[:, None]
    counts = one_hot.sum(1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(sel_batch.shape[0], device=sel_batch.device) - starts[sel_batch]
    return sel_batch * slots + rank, counts


def _scatter(values: Tensor, slots: Tensor, total: int, fill: float) -> Tensor:
    out = values.new_full((total, *values.shape[1:]), fill)
    return out.index_put((slots,), values)


class DetectorExport(nn.Module):
    """What every exported ``Detector`` shares: ``GeneralizedRCNNTransform``'s resize,
    normalisation and padding as graph ops (``_resize``), and the final per-class NMS of
    candidate detections into the padded output layout (``_detections``).

    Subclasses implement ``forward(images uint8 [B, 3, H, W]) -> (boxes [B, D, 4], scores
    [B, D], labels int64 [B, D], num_detections int64 [B])``; boxes x1y1x2y2 in input pixels,
    rows past ``num_detections`` are zero, ``D = detections_per_img``.
    """

    def __init__(self, detector: nn.Module, detections_per_img: int) -> None:
        super().__init__()
        t = detector.transform
        self.backbone = detector.backbone
        self.min_size, self.max_size = float(t.min_size[-1]), float(t.max_size)
        self.divisible = t.size_divisible
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(t.image_std).view(1, 3, 1, 1))
        self.detections = detections_per_img

    def _resize(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised, resized, padded batch and the resized (unpadded) height and width."""
        x = (images.float() / 255.0 - self.mean) / self.std
        h, w = torch.as_tensor(x.shape[-2]), torch.as_tensor(x.shape[-1])
        short, long = torch.minimum(h, w), torch.maximum(h, w)
        scale = torch.minimum(scale64(self.min_size, short), scale64(self.max_size, long))
        new_hw = (torch.stack([h, w]).double() * scale).floor().long()  # as eager, in float64
        # a side that scales below one pixel (a 10 x 4000 strip: 10 * 256 / 4000) keeps one;
        # torchvision fails there, and Resize rejects a size of 0 (opset 11's Clip takes
        # no integers, hence no clamp)
        new_hw = new_hw + (new_hw == 0).long()
        x = ResizeTo.apply(x, new_hw)
        new_h, new_w = new_hw[0], new_hw[1]
        d = self.divisible
        x = nn.functional.pad(x, (0, (d - new_w % d) % d, 0, (d - new_h % d) % d))
        return x, new_h, new_w

    def _detections(
        self,
        images: Tensor,
        resized: tuple[Tensor, Tensor],
        candidates: tuple[Tensor, Tensor, Tensor],
        nms_thresh: float,
        score_thresh: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-class NMS of ``candidates`` = (boxes ``[B, N, 4]`` in resized pixels, scores
        ``[B, N]``, labels int64 ``[B, N]``); scores <= ``score_thresh`` never survive. Keeps
        the best ``detections_per_img`` per image and returns the padded outputs, boxes scaled
        from the ``resized`` (height, width) back to the pixels of ``images [B, 3, H, W]``."""
        boxes, scores, labels = candidates
        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        new_h, new_w = resized
        sel = _batched_nms(boxes, scores, labels, self.detections, nms_thresh, score_thresh)
        flat = sel[:, 0] * boxes.shape[1] + sel[:, 2]
        ratio = torch.stack([w / new_w, h / new_h] * 2).to(boxes)  # resized -> input pixels
        det_boxes = boxes.reshape(-1, 4)[flat] * ratio
        det_scores, det_labels = scores.reshape(-1)[flat], labels.reshape(-1)[flat]
        slots, num = _pad_per_image(sel[:, 0], b, self.detections)
        total = b * self.detections
        return (
            _scatter(det_boxes, slots, total, 0.0).view(b, -1, 4),
            _scatter(det_scores, slots, total, 0.0).view(b, -1),
            _scatter(det_labels, slots, total, 0).view(b, -1),
            num,
        )


class FasterRCNNExport(DetectorExport):
    """``images uint8 [B, 3, H, W] -> (boxes [B, D, 4], scores [B, D], labels int64 [B, D],
    num_detections int64 [B])``; boxes x1y1x2y2 in input pixels, labels 1-based (0 = padding),
    rows past ``num_detections`` are zero. Same detections as ``Detector`` in eval mode."""

    def __init__(self, detector: nn.Module) -> None:
        head = detector.head
        super().__init__(detector, head.roi_heads.detections_per_img)
        self.fpn, self.rpn, self.roi = head.fpn, head.rpn, head.roi_heads

    def _proposals(
        self, x: Tensor, levels: list[Tensor], size: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """RPN: ``(batch index [K], boxes [K, 4])`` after per-level top-k and NMS."""
        rpn, b = self.rpn, x.shape[0]
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(ImageList(x, [(x.shape[-2], x.shape[-1])]), levels)[0]
        counts = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        objectness = objectness.view(b, -1)
        n = objectness.shape[1]
        all_anchors = anchors[None].expand(b, n, 4).reshape(-1, 4)
        proposals = rpn.box_coder.decode_single(deltas.detach(), all_anchors).view(b, n, 4)
        top, lvl, offset = [], [], 0
        for i, count in enumerate(counts):
            part = objectness[:, offset : offset + count]
            k = _topk_min(part, rpn.pre_nms_top_n(), 1)
            idx = part.topk(k, dim=1).indices + offset
            top.append(idx)
            lvl.append(torch.full_like(idx, i))
            offset = offset + count
        idx, lvl = torch.cat(top, 1), torch.cat(lvl, 1)
        scores = objectness.gather(1, idx).sigmoid()
        boxes = proposals.gather(1, idx[..., None].expand(-1, -1, 4))
        boxes = _clip(boxes, *size)
        wh = boxes[..., 2:] - boxes[..., :2]
        scores = torch.where((wh >= rpn.min_size).all(-1), scores, -1.0)
        sel = _batched_nms(
            boxes, scores, lvl, rpn.post_nms_top_n(), rpn.nms_thresh, rpn.score_thresh
        )
        flat = boxes.reshape(-1, 4)[sel[:, 0] * boxes.shape[1] + sel[:, 2]]
        return sel[:, 0], flat

    def _pool(self, pyramid: dict[str, Tensor], batch_idx: Tensor, boxes: Tensor) -> Tensor:
        """MultiScaleRoIAlign over flat rois ``boxes [K, 4]``: each box pooled from the level
        its size maps to -> ``[K, C, 7, 7]`` in the order of ``boxes``.

        The levels' results are concatenated and put back in order with ONE gather (eager
        torchvision writes each level into a zero tensor; in ONNX that is one full copy of
        the ~50 MB result per level)."""
        pool = self.roi.box_roi_pool  # its scales and level mapper are set by FasterRCNNHead
        rois = torch.cat([batch_idx[:, None].to(boxes), boxes], 1)
        target = pool.map_levels([boxes])
        feats = [pyramid[n] for n in pool.featmap_names]
        order, pooled = [], []
        for level, (feat, scale) in enumerate(zip(feats, pool.scales, strict=True)):
            idx = torch.nonzero(target == level).flatten()
            order.append(idx)
            pooled.append(roi_align(feat, rois[idx], pool.output_size, scale, pool.sampling_ratio))
        order_cat = torch.cat(order)
        position = torch.empty_like(order_cat).index_put(
            (order_cat,), torch.arange(order_cat.shape[0], device=order_cat.device)
        )  # position[k]: where box k's result sits in the concatenation
        return torch.cat(pooled)[position]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b = images.shape[0]
        x, new_h, new_w = self._resize(images)
        pyramid = self.fpn(dict(self.backbone(x)))
        batch_idx, proposals = self._proposals(x, list(pyramid.values()), (new_h, new_w))
        roi = self.roi
        logits, deltas = roi.box_predictor(roi.box_head(self._pool(pyramid, batch_idx, proposals)))
        k = logits.shape[1] - 1  # object classes (column 0 is background)
        boxes = roi.box_coder.decode_single(deltas, proposals).view(-1, k + 1, 4)[:, 1:]
        boxes = _clip(boxes, new_h, new_w)
        scores = logits.softmax(-1)[:, 1:]
        wh = boxes[..., 2:] - boxes[..., :2]
        scores = torch.where((wh >= 1e-2).all(-1), scores, -1.0)
        # per-image padded layout [B, P * k] so NonMaxSuppression sees one row per image
        slots_per_image = self.rpn.post_nms_top_n()
        slots, _ = _pad_per_image(batch_idx, b, slots_per_image)
        total = b * slots_per_image
        boxes = _scatter(boxes, slots, total, 0.0).view(b, -1, 4)
        scores = _scatter(scores, slots, total, -1.0).view(b, -1)
        labels = torch.arange(1, k + 1, device=x.device).repeat(slots_per_image)[None].expand(b, -1)
        return self._detections(
            images, (new_h, new_w), (boxes, scores, labels), roi.nms_thresh, roi.score_thresh
        )
