"""The classification model: normalisation + backbone + ``ClassifierHead``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


def tta_logits(model: nn.Module, images: Tensor, flip: bool = False, translate: int = 0) -> Tensor:
    """Logits ``[B, K]`` of ``images [B, 3, S, S]``, averaged over test-time views.

    flip:      also the mirror image (views averaged).
    translate: > 0 adds airbench's translated views: the batch reflect-padded by ``translate``
               pixels and cropped back at the top-left and bottom-right corners (shifts of
               +-translate px on both axes, each with its mirror when ``flip``); the final
               logits are 0.5 * untranslated + 0.5 * mean of the two shifts. Evaluation,
               ``tools/predict.py`` and the exported ONNX graph all call this one function.
    """

    def views(x: Tensor) -> Tensor:
        logits = model(x).preds.float()
        return (logits + model(x.flip(3)).preds.float()) / 2 if flip else logits

    logits = views(images)
    if translate > 0:
        size = images.shape[-2:]
        padded = F.pad(images.float(), (translate,) * 4, mode="reflect")
        shift = 2 * translate
        up_left = views(padded[:, :, : size[0], : size[1]])
        down_right = views(padded[:, :, shift:, shift:])
        logits = 0.5 * logits + 0.25 * (up_left + down_right)
    return logits
