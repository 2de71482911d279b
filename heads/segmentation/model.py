"""A segmentation model: backbone + head (+ auxiliary FCN head for training).

The head and the auxiliary head read the backbone's declared ``feature_info``; the model only
wires them. ``from_torchvision_state_dict`` maps torchvision's DeepLabV3 / FCN key names onto
ours (a prefix rename), so ``deeplabv3_resnet50`` weights load directly.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from backbones.base import Backbone
from heads.base import HeadOutput
from heads.segmentation.base import SegmentationHead

TORCHVISION_PREFIXES = {
    "classifier.": "head.classifier.",
    "aux_classifier.": "aux_head.classifier.",
}


def from_torchvision_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``DeepLabV3``/``FCN`` keys -> ``SegmentationModel`` keys.

    ``backbone.*`` is unchanged (our ResNets keep torchvision's names); ``classifier.*`` becomes
    ``head.classifier.*`` and ``aux_classifier.*`` becomes ``aux_head.classifier.*``.
    """
    out = {}
    for key, value in state.items():
        for old, new in TORCHVISION_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


class SegmentationModel(nn.Module):
    """``forward(images: Tensor[B, C, H, W], targets: LongTensor[B, H, W] | None) -> HeadOutput``.

    preds:  logits Tensor[B, K, H, W] at input resolution (from ``head`` only).
    losses: with targets, the head's losses plus the auxiliary head's losses times
            ``aux_weight``, prefixed ``aux_``. The auxiliary head runs only when targets are
            given, so inference and export never pay for it.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: SegmentationHead,
        aux_head: SegmentationHead | None = None,
        *,
        aux_weight: float = 0.4,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.aux_weight = aux_weight

    def forward(self, images: Tensor, targets: Tensor | None = None) -> HeadOutput:
        size = (images.shape[-2], images.shape[-1])
        features = self.backbone(images)
        out = self.head(features, targets, size=size)
        if self.aux_head is not None and targets is not None:
            aux = self.aux_head(features, targets, size=size)
            for name, value in aux.losses.items():
                out.losses[f"aux_{name}"] = self.aux_weight * value
        return out
