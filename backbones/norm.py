"""Normalisation layer choices for every backbone: one name -> ``Callable[[channels], Module]``.

- ``"batchnorm"``: ``nn.BatchNorm2d``, the default; loads torchvision/timm checkpoints as is.
- ``"frozen_batchnorm"``: ``FrozenBatchNorm2d``, fixed statistics and affine (detection
  fine-tuning with 1-2 images per GPU, where batch statistics are noise). It is
  torchvision's layer (same ``weight/bias/running_mean/running_var`` keys, so BN checkpoints
  load) with a one-kernel forward.
- ``"groupnorm"``: ``nn.GroupNorm`` with ``gcd(32, channels)`` groups (32 groups as in Wu & He
  2018, fewer for the 16-channel CIFAR stages); batch-size independent. It has no running
  statistics, so a BatchNorm checkpoint does not fit it.
- a callable ``f(channels) -> nn.Module`` for anything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F
from torchvision import ops

from backbones.registry import OptionError

NormLayer = Callable[[int], nn.Module]


class FrozenBatchNorm2d(ops.FrozenBatchNorm2d):
    """``torchvision.ops.FrozenBatchNorm2d`` computed by ``F.batch_norm`` in inference form.

    torchvision's forward builds ``scale`` and ``shift`` and then makes two passes over
    ``x [B, C, H, W]`` (multiply, add); the inference batch norm kernel makes one, which is
    what lets our detector keep pace with torchvision's. Same result up to float rounding
    (~1e-6), gradients still flow to ``x``, and ONNX export gives one ``BatchNormalization``
    that ONNX Runtime folds into the preceding convolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(32, channels)`` groups: 32 for 64+ channels, 16 for 16 channels."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


NORM_LAYERS: dict[str, NormLayer] = {
    "batchnorm": nn.BatchNorm2d,
    "frozen_batchnorm": FrozenBatchNorm2d,
    "groupnorm": group_norm,
}


def make_norm(norm_layer: str | NormLayer) -> NormLayer:
    """Resolve ``norm_layer`` (a name from ``NORM_LAYERS`` or a callable) to a layer factory."""
    if callable(norm_layer):
        return norm_layer
    if norm_layer not in NORM_LAYERS:
        raise OptionError(
            f"norm_layer={norm_layer!r} is not known; expected one of "
            f"{', '.join(NORM_LAYERS)} or a callable channels -> nn.Module"
        )
    return NORM_LAYERS[norm_layer]
