"""Segmentation losses: cross-entropy with a void label, optional class weights, soft Dice and
the Lovasz-softmax surrogate of IoU.

Why our own short Dice and Lovasz functions instead of ``segmentation_models_pytorch.losses``:
smp pulls in a large dependency tree for two formulas; it stays a benchmark-only dependency.
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


def lovasz_softmax_loss(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Lovasz-softmax (Berman et al., CVPR 2018): a convex surrogate of ``1 - IoU`` per class,
    averaged over the classes present in the batch (pixels of the whole batch pooled).

    logits: Tensor[B, K, H, W]; target: LongTensor[B, H, W] with ``ignore_index`` for void.
    Why: cross-entropy weighs every pixel alike, while the score is IoU per class; this term's
    gradient follows IoU's, pixel errors sorted by size (one sort of B*H*W values per class).
    """
    num_classes = logits.shape[1]
    valid = target != ignore_index
    probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1)[valid]  # [N, K]
    labels = target[valid]
    per_class = []
    for k in range(num_classes):
        fg = (labels == k).float()
        if not bool(fg.any()):
            continue
        errors, order = (fg - probs[:, k]).abs().sort(descending=True)
        fg_sorted = fg[order]
        intersection = fg_sorted.sum() - fg_sorted.cumsum(0)
        union = fg_sorted.sum() + (1 - fg_sorted).cumsum(0)
        jaccard = 1 - intersection / union  # IoU loss after the i largest errors
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        per_class.append(torch.dot(errors, grad))
    if not per_class:
        return logits.sum() * 0.0
    return torch.stack(per_class).mean()


class SegmentationLoss(nn.Module):
    """``{"ce": ..., "dice": ..., "lovasz": ...}`` for logits Tensor[B, K, H, W] and target
    LongTensor[B, H, W].

    ignore_index:  label of void pixels; they add nothing to any term.
    class_weights: optional per-class weights for the cross-entropy (length K).
    dice_weight:   weight of the soft Dice term; 0 leaves it out.
    lovasz_weight: weight of the Lovasz-softmax term; 0 leaves it out.
    """

    def __init__(
        self,
        *,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        lovasz_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.dice_weight, self.lovasz_weight = dice_weight, lovasz_weight
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
        if self.lovasz_weight > 0:
            lovasz = lovasz_softmax_loss(logits, target, self.ignore_index)
            losses["lovasz"] = self.lovasz_weight * lovasz
        return losses
