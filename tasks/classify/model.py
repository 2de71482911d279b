"""The classification model: normalisation + backbone + ``ClassifierHead``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backbones.base import Backbone
from heads.base import HeadOutput
from heads.classification import ClassifierHead


class Classifier(nn.Module):
    """``forward(images, targets=None) -> HeadOutput(preds=logits [B, K], losses)``.

    images: ``[B, 3, H, W]`` in 0..255 pixel units, uint8 or float; the per-channel ``mean``
    and ``std`` (0..255 units) are applied here, so exported models and ``predict`` take raw
    pixels and nobody has to remember the normalisation.
    """

    def __init__(
        self, backbone: Backbone, head: ClassifierHead, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor, targets: Tensor | None = None) -> HeadOutput:
        x = (images.float() - self.mean) / self.std  # keeps a channels_last input's layout
        return self.head(self.backbone(x), targets)
