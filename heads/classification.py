"""Image classification head: last feature map -> global pool -> dropout -> linear -> logits."""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from backbones.registry import OptionError
from heads.base import HeadOutput


class ClassifierHead(nn.Module):
    """Logits from one backbone level.

    in_channels:     channels of ``features[feature]`` (read it from ``backbone.feature_info``).
    num_classes:     K.
    feature:         which level to classify from (default: the backbone's last, e.g. "c5").
    pool:            "avg" or "max" global pooling.
    dropout:         dropout probability before the linear layer.
    label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
    scale:           multiplies the logits; <1 tempers a wide head's confidence (airbench
                     uses 1/9 on its max-pooled features).

    forward(features, targets=None) -> HeadOutput(preds=logits [B, K], losses={"cls": ...})
    where targets are int64 class ids [B] or soft targets float [B, K] (mixup/cutmix).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        feature: str,
        pool: str = "avg",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise OptionError(f"ClassifierHead pool={pool!r}: expected 'avg' or 'max'")
        self.feature = feature
        self.pool = pool
        self.scale = scale
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: Mapping[str, Tensor], targets: Tensor | None = None) -> HeadOutput:
        x = features[self.feature]
        x = x.amax(dim=(2, 3)) if self.pool == "max" else x.mean(dim=(2, 3))
        logits = self.fc(self.dropout(x))
        if self.scale != 1.0:
            logits = logits * self.scale
        losses = {}
        if targets is not None:
            smoothing = self.label_smoothing if targets.dim() == 1 else 0.0  # mixup is soft already
            losses["cls"] = F.cross_entropy(logits.float(), targets, label_smoothing=smoothing)
        return HeadOutput(preds=logits, losses=losses)
