"""Pieces both detection heads share: the norm choice and the feature pyramid built from
a backbone's declared ``feature_info`` (never from hard-coded channel counts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from backbones.base import FeatureInfo
from backbones.registry import OptionError

HEAD_NORMS = ("none", "groupnorm", "batchnorm")


def norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    """``channels -> norm module`` for the heads' convolutions, or None for plain conv + bias.

    "none" suits fine-tuning from pre-trained weights (torchvision's recipe); "groupnorm"
    (32 groups, fewer when channels do not divide) trains from scratch at small batch sizes,
    where BatchNorm statistics are too noisy; "batchnorm" suits large batches.
    """
    if norm == "none":
        return None
    if norm == "groupnorm":
        return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "batchnorm":
        return nn.BatchNorm2d
    raise OptionError(f"head norm {norm!r} is not one of {', '.join(HEAD_NORMS)}")


def build_fpn(
    feature_info: Sequence[FeatureInfo],
    out_channels: int,
    *,
    norm: str,
    extra_block: ExtraFPNBlock | None,
) -> FeaturePyramidNetwork:
    """torchvision's FPN over every level in ``feature_info`` (input channels read from it).

    Its forward maps ``{"c2": Tensor[B, C2, H/4, W/4], ...}`` to the same keys with
    ``out_channels`` each, plus the extra block's levels (``"pool"`` or ``"p6", "p7"``).
    """
    if not feature_info:
        raise OptionError("the detection head needs at least one backbone feature level")
    return FeaturePyramidNetwork(
        [f.channels for f in feature_info],
        out_channels,
        extra_blocks=extra_block,
        norm_layer=norm_layer(norm),
    )
