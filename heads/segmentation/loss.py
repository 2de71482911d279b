"""Segmentation losses: cross-entropy with a void label, optional class weights and soft Dice.

Why our own 15-line soft Dice instead of ``segmentation_models_pytorch.losses.DiceLoss``:
smp pulls in a large dependency tree for one formula; it stays a benchmark-only dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def soft_dice_loss(logits: Tensor, target: Tensor, ignore_index: int, eps: float = 1.0) -> Tensor:
    """Multi-class soft Dice, ``1 - mean_k dice_k`` over classes present in the batch.

    logits: Tensor[B, K, H, W]; target: LongTensor[B, H, W] with ``ignore_index`` for void.
    Void pixels are removed from both the prediction and the one-hot target.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # [B, 1, H, W]
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (total + eps)
    present = onehot.sum(dims) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


class SegmentationLoss(nn.Module):
    """``{"ce": ..., "dice": ...}`` for logits Tensor[B, K, H, W] and target LongTensor[B, H, W].

    ignore_index:  label of void pixels; they add nothing to either term.
    class_weights: optional per-class weights for the cross-entropy (length K).
    dice_weight:   weight of the soft Dice term; 0 leaves it out.
    """

    def __init__(
        self,
        *,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weights has {self.class_weights.numel()} entries but the model predicts "
                f"{logits.shape[1]} classes; give one weight per class"
            )
        target = target.long()
        ce = F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index
        )
        if torch.isnan(ce):  # every pixel void: a zero loss that keeps the graph
            ce = logits.sum() * 0.0
        losses = {"ce": ce}
        if self.dice_weight > 0:
            dice = soft_dice_loss(logits, target, self.ignore_index)
            losses["dice"] = self.dice_weight * dice
        return losses
