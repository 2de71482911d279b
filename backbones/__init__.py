"""ResNet backbones behind one registry, plus any timm model as ``"timm:<name>"``.

>>> bb = create_backbone("resnet50", out_indices=(1, 2, 3, 4), output_stride=16)
>>> feats = bb(images)          # OrderedDict c2..c5: Tensor[B, C, H/s, W/s]
>>> bb.feature_info             # (FeatureInfo("c2", 256, 4), ..., FeatureInfo("c5", 2048, 16))

Classification: ``create_backbone("resnet50", num_classes=1000).forward_logits(x)`` gives
``Tensor[B, 1000]``, equal to torchvision's ``resnet50(x)`` for the same weights.
Importing this package registers the ImageNet (``backbones.resnet``) and CIFAR
(``backbones.cifar``) families; ``list_backbones()`` names them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from backbones import cifar, fast_cifar, resnet  # noqa: F401  (registers the families)
from backbones.base import BACKBONES, Backbone, FeatureInfo
from backbones.registry import close_matches
from backbones.weights import LoadReport, WeightsMismatchError, load_weights

TIMM_PREFIX = "timm:"
register_backbone = BACKBONES.register

__all__ = [
    "BACKBONES",
    "Backbone",
    "FeatureInfo",
    "LoadReport",
    "WeightsMismatchError",
    "create_backbone",
    "list_backbones",
    "load_weights",
    "register_backbone",
]


def create_backbone(name: str, *, pretrained: str | Path | None = None, **options: Any) -> Backbone:
    """Build the backbone ``name`` (registered, or ``"timm:<timm name>"``).

    options: the builder's keyword options (``in_chans``, ``out_indices``, ``output_stride``,
    ``frozen_stages``, ``norm_layer``, ``zero_init_residual``, ``drop_path_rate``,
    ``num_classes``; timm backbones take the first five and ``drop_path_rate``). An unknown
    name or option raises an error naming the closest valid ones.
    pretrained: a local checkpoint loaded strictly with ``load_weights`` (nothing is
    downloaded); an ImageNet classifier in the file is skipped when ``num_classes=0``.
    """
    if name.startswith(TIMM_PREFIX):
        from backbones.timm_backbone import TimmBackbone

        params = list(inspect.signature(TimmBackbone).parameters)[1:]
        for key in options:
            if key not in params:
                hint = close_matches(key, params)
                raise TypeError(
                    f"backbone {name!r} takes no argument {key!r}"
                    + (f"; did you mean {', '.join(hint)}?" if hint else "")
                    + f" (accepted: {', '.join(params)})"
                )
        model = TimmBackbone(name[len(TIMM_PREFIX) :], **options)
    else:
        model = BACKBONES.create(name, **options)
    if pretrained is not None:
        load_weights(model, pretrained, strict=True)
    return model


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell wildcard (``"resnet*"``), sorted."""
    return BACKBONES.list(pattern)
