"""Fast CIFAR nets for short CPU budgets (airbench / ResNet-9 style, He et al.'s shortcuts).

Why another CIFAR family: the classic ResNet-20 spends its FLOPs in 16-channel convolutions
at full 32x32 resolution, which run far below a CPU's peak. These nets downsample by
max-pooling right after each stage's first convolution (airbench, Jordan 2024; ResNet-9,
Page 2018) and keep the channels wide, so the same FLOPs buy more capacity per second.

Layout (input 32x32):
  c1  stem: 3x3 conv to ``stem_width`` + BN + ReLU                  stride 1
  c2..c4  stage i: 3x3 conv to ``widths[i]`` -> 2x2 max-pool -> BN -> ReLU -> y;
          out = ReLU(y + BN(conv3x3(y)))  (a residual branch; its BN starts at zero with
          ``zero_init_residual``, so every stage starts as conv+pool)  strides 2 / 4 / 8
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import BACKBONES, Backbone, FeatureInfo
from backbones.blocks import conv3x3, drop_path
from backbones.norm import NormLayer, make_norm
from backbones.resnet import check_options


class _PoolStage(nn.Module):
    def __init__(self, cin: int, cout: int, norm: NormLayer, drop_path_rate: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout)
        self.bn1 = norm(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = norm(cout)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.relu(y + self.drop_path(self.bn2(self.conv2(y))))


class FastCifarNet(Backbone):
    """``forward(x [B, in_chans, H, W]) -> OrderedDict`` of the levels in ``out_indices``
    (0 = ``c1`` stem, 1..3 = ``c2..c4``; default all stages); H and W should be multiples
    of 8. Takes the same options as ``ResNet`` (``output_stride`` is accepted for the common
    contract; the net's own stride is 8, so no stage ever needs dilation)."""

    def __init__(
        self,
        widths: tuple[int, int, int],
        *,
        name: str,
        stem_width: int = 32,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        output_stride: int = 32,
        frozen_stages: int = -1,
        norm_layer: str | NormLayer = "batchnorm",
        zero_init_residual: bool = True,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.name, self.in_chans, self.num_classes = name, in_chans, num_classes
        self.out_indices = check_options(
            name, 3, out_indices, output_stride, frozen_stages, drop_path_rate, num_classes
        )
        norm = make_norm(norm_layer)
        self.conv1 = conv3x3(in_chans, stem_width)
        self.bn1 = norm(stem_width)
        rates = [drop_path_rate * (i + 1) / 3 for i in range(3)]  # linear in depth
        chans = (stem_width, *widths)
        for i in range(3):
            self.add_module(f"layer{i + 1}", _PoolStage(chans[i], chans[i + 1], norm, rates[i]))
        levels = [FeatureInfo(f"c{i + 1}", chans[i], 2**i) for i in range(4)]
        self.feature_info = tuple(levels[i] for i in self.out_indices)
        self.num_features = chans[-1]
        if num_classes > 0:
            self.fc = nn.Linear(chans[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for i in range(1, 4):
                bn2 = getattr(self, f"layer{i}").bn2
                if getattr(bn2, "weight", None) is not None:
                    nn.init.zeros_(bn2.weight)
        stem_and_stages = ["conv1", "bn1", *(f"layer{i}" for i in range(1, frozen_stages + 1))]
        self.freeze(stem_and_stages if frozen_stages >= 0 else [])

    def _stages(self, x: Tensor, last: int) -> list[Tensor]:
        """Stem and stages ``1..last``; returns ``[c1, ..., c_{last+1}]``."""
        levels = [F.relu(self.bn1(self.conv1(x)))]
        for i in range(1, last + 1):
            levels.append(getattr(self, f"layer{i}")(levels[-1]))
        return levels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        self.check_input(x)
        levels = self._stages(x, self.out_indices[-1])
        return OrderedDict((f"c{i + 1}", levels[i]) for i in self.out_indices)

    def forward_head(self, x: Tensor) -> Tensor:
        """Last stage map ``[B, C, h, w]`` -> logits ``[B, num_classes]`` (global avg pool + fc)."""
        if self.num_classes <= 0:
            raise RuntimeError(f"{self.name} was built with num_classes=0 (features only)")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward_logits(self, x: Tensor) -> Tensor:
        """``x[B, in_chans, H, W]`` -> logits ``[B, num_classes]``."""
        self.check_input(x)
        return self.forward_head(self._stages(x, 3)[-1])


def _builder(name: str, widths: tuple[int, int, int], stem_width: int, doc: str) -> None:
    def build(**options: Any) -> FastCifarNet:
        return FastCifarNet(widths, name=name, stem_width=stem_width, **options)

    signature = inspect.signature(FastCifarNet.__init__)
    build.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY][2:]
    )
    build.__doc__ = doc
    build.__name__ = build.__qualname__ = name
    BACKBONES.register(name)(build)


_builder("fast_cifar_s", (32, 96, 192), 24, "Fast CIFAR net, 32/96/192 channels (~40M MACs).")
_builder("fast_cifar_m", (48, 128, 256), 24, "Fast CIFAR net, 48/128/256 channels (~70M MACs).")
_builder("fast_cifar_l", (64, 256, 256), 32, "Fast CIFAR net at airbench94 widths (~130M MACs).")
