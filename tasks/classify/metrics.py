"""Classification metrics with known answers: top-k accuracy and the confusion matrix."""

from __future__ import annotations

import torch
from torch import Tensor


def topk_correct(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of rows of ``logits [N, K]`` whose ``targets [N]`` is among the top ``k``.

    ``k`` is capped at ``K`` (top-5 of a 3-class problem is top-3, i.e. always right).
    Ties are broken by ``torch.topk``'s order.
    """
    num_classes = logits.shape[1]
    top = logits.topk(min(max(ks), num_classes), dim=1).indices  # [N, kmax]
    hits = top == targets[:, None]
    return {k: int(hits[:, : min(k, num_classes)].any(dim=1).sum()) for k in ks}


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``int64 [K, K]``: row = true class, column = predicted class."""
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
