"""The ResNet family (He et al. 2015) written out, with torchvision's parameter names.

One ``ResNet`` class covers every member; a frozen ``ResNetSpec`` says what differs
(block, depth, widths, stem, shortcut). Keeping torchvision's names (``conv1``, ``bn1``,
``layer1..4``, ``fc``, ``downsample.0/1``) lets torchvision state dicts load with no key
mapping; ``resnet50d``/``seresnet50`` follow timm's names (``conv1.0/1/3/4/6``,
``downsample.1/2``, ``se.fc1/fc2``) so timm state dicts load too.

Feature levels (``out_indices``): 0 = ``c1`` the stem output after its ReLU and before the
max-pool (stride 2, like timm's ``act1``), 1..4 = ``c2..c5`` the outputs of ``layer1..4``
(strides 4, 8, 16, 32). ``output_stride`` 16 or 8 turns the stride of ``layer4`` (and
``layer3``) into dilation exactly as torchvision's ``replace_stride_with_dilation``
(``[False, False, True]`` / ``[False, True, True]``); ``feature_info`` records true strides.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from backbones.base import BACKBONES, Backbone, FeatureInfo
from backbones.blocks import BasicBlock, Bottleneck, conv3x3, make_shortcut
from backbones.norm import NormLayer, make_norm
from backbones.registry import OptionError

OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class ResNetSpec:
    """What distinguishes one family member from another.

    stem: ``"imagenet"`` 7x7/2 conv + 3x3/2 max-pool; ``"deep"`` three 3x3 convs
          (``stem_width`` inner channels, ResNet-C) + max-pool; ``"cifar"`` one 3x3/1 conv;
          ``"cifar_preact"`` one bare 3x3/1 conv (the blocks normalise their own input and a
          final norm + ReLU closes the last stage).
    shortcut: ``"conv"``, ``"avg"`` or ``"pad"`` (see ``blocks.make_shortcut``).
    residual: False removes every shortcut (the ``*_plain`` twins).
    """

    name: str
    block: type[nn.Module]
    layers: tuple[int, ...]
    planes: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = "imagenet"
    stem_width: int = 64
    groups: int = 1
    width_per_group: int = 64
    shortcut: str = "conv"
    se: bool = False
    residual: bool = True
    doc: str = ""


class ResNet(Backbone):
    """``forward(x[B, in_chans, H, W]) -> OrderedDict{c_k: Tensor[B, C_k, H/s_k, W/s_k]}``.

    Options (every registered ResNet takes them, keyword only):
      in_chans:          input channels.
      out_indices:       levels to return (0 = stem ``c1``, i = stage i ``c{i+1}``); default all
                         stages. Stages after the last requested one are not run.
      output_stride:     8, 16 or 32 (ImageNet nets); later stages dilate instead of striding.
      frozen_stages:     -1 none; k >= 0 freezes the stem and stages 1..k (no grad, and
                         their norm layers stay in eval mode through ``.train()``).
      norm_layer:        ``"batchnorm"``, ``"frozen_batchnorm"``, ``"groupnorm"`` or a callable.
      zero_init_residual: zero the last norm (or conv) of each branch so every block starts
                         as the identity (Goyal et al. 2017); plain twins ignore it.
      drop_path_rate:    stochastic depth, rising linearly from 0 (first block) to this rate.
      num_classes:       > 0 adds ``avgpool`` + ``fc``; logits via ``forward_logits(x)``.
    """

    def __init__(
        self,
        spec: ResNetSpec,
        *,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        output_stride: int = 32,
        frozen_stages: int = -1,
        norm_layer: str | NormLayer = "batchnorm",
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        n = len(spec.layers)
        self.name, self.in_chans, self.num_classes = spec.name, in_chans, num_classes
        self.out_indices = check_options(
            spec.name, n, out_indices, output_stride, frozen_stages, drop_path_rate, num_classes
        )
        norm = make_norm(norm_layer)
        self._build_stem(spec, in_chans, norm)
        stride = 2 if spec.stem in ("imagenet", "deep") else 1
        infos = [FeatureInfo("c1", spec.planes[0], stride)]
        stride *= 2 if spec.stem in ("imagenet", "deep") else 1  # max-pool
        total, dilation, inplanes = sum(spec.layers), 1, spec.planes[0]
        rates = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        for i, (planes, depth) in enumerate(zip(spec.planes, spec.layers, strict=True)):
            step = 1 if i == 0 else 2
            prev_dilation = dilation
            if stride * step > output_stride:
                dilation, step = dilation * step, 1
            stride *= step
            first = sum(spec.layers[:i])
            stage = _make_stage(
                spec, inplanes, planes, depth, step, dilation, prev_dilation, norm,
                rates[first : first + depth],
            )  # fmt: skip
            inplanes = planes * spec.block.expansion
            if spec.stem == "cifar_preact" and i == n - 1:
                stage.append(nn.Sequential(norm(inplanes), nn.ReLU(inplace=True)))
            self.add_module(f"layer{i + 1}", stage)
            infos.append(FeatureInfo(f"c{i + 2}", inplanes, stride))
        self.num_features = inplanes
        if num_classes > 0:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)
        self.feature_info = tuple(infos[i] for i in self.out_indices)
        self._init_weights(zero_init_residual)
        stem_and_stages = ["conv1", "bn1", *(f"layer{i}" for i in range(1, frozen_stages + 1))]
        self.freeze(stem_and_stages if frozen_stages >= 0 else [])

    def _build_stem(self, spec: ResNetSpec, in_chans: int, norm: NormLayer) -> None:
        out, w = spec.planes[0], spec.stem_width
        if spec.stem == "imagenet":
            self.conv1: nn.Module = nn.Conv2d(in_chans, out, 7, 2, 3, bias=False)
        elif spec.stem == "deep":
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, w, 2), norm(w), nn.ReLU(inplace=True),
                conv3x3(w, w), norm(w), nn.ReLU(inplace=True), conv3x3(w, out),
            )  # fmt: skip
        elif spec.stem in ("cifar", "cifar_preact"):
            self.conv1 = conv3x3(in_chans, out)
        else:
            raise OptionError(f"{spec.name}: stem={spec.stem!r}; expected imagenet, deep, cifar*")
        preact = spec.stem == "cifar_preact"
        self.bn1 = nn.Identity() if preact else norm(out)
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)
        imagenet = spec.stem in ("imagenet", "deep")
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            # Plain blocks (no shortcut) are skipped: zeroing their branch would zero the
            # whole network's output instead of starting each block at the identity.
            for m in self.modules():
                if hasattr(m, "zero_init_last") and m.residual:
                    m.zero_init_last()

    def _stages(self, x: Tensor, last: int) -> list[Tensor]:
        """Run the stem and stages ``1..last``; returns ``[c1, c2, ..., c_{last+1}]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        levels = [x]
        x = self.maxpool(x)
        for i in range(1, last + 1):
            x = getattr(self, f"layer{i}")(x)
            levels.append(x)
        return levels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x[B, in_chans, H, W]`` -> ``{name: Tensor[B, channels, H/stride, W/stride]}``
        for the levels in ``feature_info`` (sizes round up: ``ceil(H / stride)``)."""
        self.check_input(x)
        levels = self._stages(x, self.out_indices[-1])
        return OrderedDict(
            (f.name, levels[i]) for f, i in zip(self.feature_info, self.out_indices, strict=True)
        )

    def forward_head(self, x: Tensor) -> Tensor:
        """Last stage map ``Tensor[B, num_features, h, w]`` -> logits ``Tensor[B, num_classes]``."""
        self._require_classifier()
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def _require_classifier(self) -> None:
        if self.num_classes <= 0:
            raise RuntimeError(
                f"{self.name} was built with num_classes=0 (features only); "
                "build it with num_classes=K to get logits"
            )

    def forward_logits(self, x: Tensor) -> Tensor:
        """``x[B, in_chans, H, W]`` -> logits ``Tensor[B, num_classes]`` (runs every stage,
        whatever ``out_indices`` says); equals torchvision's ``resnet(x)`` for its weights."""
        self.check_input(x)
        self._require_classifier()
        return self.forward_head(self._stages(x, len(self.stage_names))[-1])

    @property
    def stage_names(self) -> list[str]:
        return [n for n, _ in self.named_children() if n.startswith("layer")]


def check_options(
    name: str,
    n: int,
    out_indices: Sequence[int] | None,
    output_stride: int,
    frozen_stages: int,
    drop_path_rate: float,
    num_classes: int,
) -> tuple[int, ...]:
    """Validate the common options; returns the sorted ``out_indices``."""
    idx = tuple(range(1, n + 1)) if out_indices is None else tuple(out_indices)
    if not idx or any(not isinstance(i, int) or not 0 <= i <= n for i in idx):
        raise OptionError(
            f"{name}: out_indices={out_indices!r} is out of range; expected indices in 0..{n} "
            f"(0 = stem c1, 1..{n} = stages c2..c{n + 1})"
        )
    if len(set(idx)) != len(idx):
        raise OptionError(f"{name}: out_indices={out_indices!r} repeats an index")
    if output_stride not in OUTPUT_STRIDES:
        raise OptionError(
            f"{name}: output_stride={output_stride!r} is not supported; expected one of "
            f"{', '.join(map(str, OUTPUT_STRIDES))}"
        )
    if not -1 <= frozen_stages <= n:
        raise OptionError(
            f"{name}: frozen_stages={frozen_stages} is out of range; expected -1 (none), "
            f"0 (stem) .. {n} (stem and all {n} stages)"
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise OptionError(f"{name}: drop_path_rate={drop_path_rate} must be in [0, 1)")
    if num_classes < 0:
        raise OptionError(f"{name}: num_classes={num_classes} must be >= 0 (0 = no classifier)")
    return tuple(sorted(idx))


def _make_stage(
    spec: ResNetSpec,
    inplanes: int,
    planes: int,
    depth: int,
    stride: int,
    dilation: int,
    prev_dilation: int,
    norm: NormLayer,
    rates: list[float],
) -> nn.Sequential:
    """``depth`` blocks; the first one strides (or, dilated, keeps the previous dilation)."""
    out = planes * spec.block.expansion
    shortcut = make_shortcut(spec.shortcut, inplanes, out, stride, norm) if spec.residual else None
    common = dict(
        groups=spec.groups, base_width=spec.width_per_group, dilation=dilation, norm=norm,
        se=spec.se, residual=spec.residual,
    )  # fmt: skip
    blocks = [
        spec.block(
            inplanes if j == 0 else out,
            planes,
            stride=stride if j == 0 else 1,
            downsample=shortcut if j == 0 else None,
            drop_path_rate=rates[j],
            first_dilation=prev_dilation if j == 0 else dilation,
            **common,
        )  # fmt: skip
        for j in range(depth)
    ]
    return nn.Sequential(*blocks)


_OPTIONS = inspect.signature(ResNet.__init__)
_OPTIONS = _OPTIONS.replace(parameters=list(_OPTIONS.parameters.values())[2:])


def register_spec(spec: ResNetSpec) -> None:
    """Register ``spec.name`` as a builder ``(**options) -> ResNet`` whose signature lists
    exactly ``ResNet``'s keyword options (so the registry can reject a misspelt one)."""

    def build(**options: Any) -> ResNet:
        return ResNet(spec, **options)

    build.__name__ = build.__qualname__ = spec.name
    build.__doc__ = spec.doc
    build.__signature__ = _OPTIONS  # type: ignore[attr-defined]
    BACKBONES.register(spec.name)(build)


_R50 = ResNetSpec("resnet50", Bottleneck, (3, 4, 6, 3), doc="ResNet-50 (torchvision layout).")
_R101 = replace(_R50, name="resnet101", layers=(3, 4, 23, 3), doc="ResNet-101.")
IMAGENET_SPECS = (
    ResNetSpec("resnet18", BasicBlock, (2, 2, 2, 2), doc="ResNet-18 (torchvision layout)."),
    ResNetSpec(
        "resnet18_w24",
        BasicBlock,
        (2, 2, 2, 2),
        planes=(24, 48, 96, 192),
        doc="ResNet-18 at 3/8 width (24-192 channels, ~1/7 of the FLOPs, 1.6 M parameters): "
        "for training from scratch on a CPU budget; no torchvision/timm checkpoint exists.",
    ),
    ResNetSpec("resnet34", BasicBlock, (3, 4, 6, 3), doc="ResNet-34 (torchvision layout)."),
    _R50,
    _R101,
    replace(_R50, name="resnet152", layers=(3, 8, 36, 3), doc="ResNet-152."),
    replace(_R50, name="resnext50_32x4d", groups=32, width_per_group=4, doc="ResNeXt-50 32x4d."),
    replace(_R101, name="resnext101_32x8d", groups=32, width_per_group=8, doc="ResNeXt-101."),
    replace(_R50, name="wide_resnet50_2", width_per_group=128, doc="Wide ResNet-50-2."),
    replace(_R101, name="wide_resnet101_2", width_per_group=128, doc="Wide ResNet-101-2."),
    replace(
        _R50,
        name="resnet50d",
        stem="deep",
        stem_width=32,
        shortcut="avg",
        doc="ResNet-50-D (Bag of Tricks): deep stem + avg-pool shortcut, timm's layout.",
    ),  # fmt: skip
    replace(_R50, name="seresnet50", se=True, doc="SE-ResNet-50 (timm's layout and names)."),
)
for _spec in IMAGENET_SPECS:
    register_spec(_spec)
