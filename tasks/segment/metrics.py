"""Segmentation metrics from one confusion matrix: mIoU, per-class IoU and pixel accuracy.

All three numbers come from the same ``K x K`` matrix (rows = ground truth, columns =
prediction), accumulated with one ``torch.bincount`` per batch, so they always agree.
Void pixels (``ignore_index``) are left out of the matrix entirely.

A class absent from both the ground truth and the predictions of the whole evaluation has an
undefined IoU (0 / 0): it is reported as ``None`` and excluded from the mean, the convention
of the PASCAL VOC and Cityscapes evaluators. A class that is predicted but never present (or
present but never predicted) has IoU 0 and counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tasks.images import DataError


class ConfusionMatrix:
    """Accumulates ``matrix[t, p]`` = number of pixels of true class t predicted as p."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: integer tensors of the same shape (e.g. [B, H, W]); target may hold
        ``ignore_index``. Labels outside 0..K-1 that are not void raise a ValueError."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {list(pred.shape)} != target shape {list(target.shape)}")
        k = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long()
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            bad = target[(target < 0) | (target >= k)][0].item()
            raise DataError(
                f"ground-truth label {bad} is outside 0..{k - 1} and is not the ignore_index "
                f"{self.ignore_index}"
            )
        counts = torch.bincount(target * k + pred, minlength=k * k)
        self.matrix += counts.reshape(k, k).to(self.matrix.device, torch.int64).cpu()

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"mIoU": float, "pixel_acc": float, "per_class_iou": {name: float | None}}``.

        IoU_k = TP / (TP + FP + FN); pixel_acc = trace / total over non-void pixels.
        """
        mat = self.matrix.double()
        tp = mat.diag()
        union = mat.sum(0) + mat.sum(1) - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
        total = mat.sum()
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": float(iou[present].mean()) if bool(present.any()) else 0.0,
            "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
            "per_class_iou": {
                name: (float(iou[i]) if bool(present[i]) else None) for i, name in enumerate(names)
            },
        }
