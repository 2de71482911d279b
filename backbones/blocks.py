"""Residual blocks with torchvision's parameter names (and timm's ``se.fc1/fc2`` for SE).

Every block computes ``y = F(x) + S(x)`` where ``F`` is the residual branch and ``S`` the
shortcut: the identity, or a projection/zero-pad when the shape changes. Because the
identity is added, the gradient reaching ``x`` is ``dL/dx = dL/dy * (1 + dF/dx)``: the ``1``
carries the signal through any depth even when ``dF/dx`` is tiny, which is why a 110-layer
ResNet trains and its ``*_plain`` twin (``residual=False``: ``y = F(x)``) does not train as well.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from backbones.norm import NormLayer
from backbones.registry import OptionError


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution whose padding keeps ``H/stride`` (padding == dilation)."""
    return nn.Conv2d(
        cin, cout, 3, stride, padding=dilation, groups=groups, dilation=dilation, bias=False
    )


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


def drop_path(rate: float) -> nn.Module:
    """Stochastic depth (Huang et al. 2016): drop the whole branch ``F`` per sample with
    probability ``rate`` in training (the survivors are scaled by ``1 / (1 - rate)``)."""
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with timm's layout, so timm ``seresnet*``
    weights load: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, ``fc*`` are biased 1x1 convs
    and the bottleneck has ``max(8, round8(channels / 16))`` channels (timm's rounding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(8, int(channels / 16 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class PadShortcut(nn.Module):
    """He et al. 2015 option A: subsample by ``stride`` and zero-pad the new channels.

    No parameters, so the CIFAR ResNets keep the paper's 0.27M/0.85M/1.7M parameter counts
    and the shortcut is still exactly an identity on the channels it keeps.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))


class _Residual(nn.Module):
    """Shared shortcut arithmetic: ``y = act(drop_path(F(x)) + S(x))``."""

    def __init__(self, downsample: nn.Module | None, drop_path_rate: float, residual: bool):
        super().__init__()
        self.drop_path = drop_path(drop_path_rate)
        self.downsample = downsample
        self.residual = residual

    def add_shortcut(self, out: Tensor, x: Tensor) -> Tensor:
        out = self.drop_path(out)
        if not self.residual:
            return out
        shortcut = x if self.downsample is None else self.downsample(x)
        if torch.is_grad_enabled():
            return out + shortcut  # out of place: autograd and the residual lab's hooks read F(x)
        return out.add_(shortcut)  # inference: in place, as torchvision, saves one allocation


class BasicBlock(_Residual):
    """Two 3x3 convs: ``y = relu(F(x) + S(x))``, ``F = bn2 . conv2 . relu . bn1 . conv1``.

    Shapes: ``x[B, inplanes, H, W] -> y[B, planes, H/stride, W/stride]``. With the last BN's
    weight at zero (``zero_init_residual``) ``F == 0`` and ``dF/dx == 0``, so for ``x > 0``
    (it is a ReLU output) the block is the identity and ``dL/dx == dL/dy`` exactly.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int = 1,
        norm: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path_rate: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__(downsample, drop_path_rate, residual)
        if groups != 1 or base_width != 64:
            raise OptionError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm(planes)
        self.se = SEModule(planes) if se else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(_Residual):
    """1x1 reduce, 3x3 (grouped for ResNeXt, strided: "ResNet v1.5"), 1x1 expand.

    ``y = relu(F(x) + S(x))``, ``F = [se .] bn3 . conv3 . relu . bn2 . conv2 . relu . bn1 . conv1``;
    the gradient is ``dL/dx = dL/dy * relu'(y) * (1 + dF/dx)`` (``dS/dx`` for a projection).
    Shapes: ``x[B, inplanes, H, W] -> y[B, planes * 4, H/stride, W/stride]``; the 3x3 conv has
    ``width = planes * base_width / 64 * groups`` channels (wide: base_width 128).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int = 1,
        norm: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path_rate: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__(downsample, drop_path_rate, residual)
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups, first_dilation)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, out)
        self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.se = SEModule(out) if se else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(_Residual):
    """Pre-activation block (He et al. 2016, "Identity Mappings"): ``y = F(x) + S(x)`` with
    ``F = conv2 . relu . bn2 . conv1 . relu . bn1`` and no ReLU after the sum, so the
    shortcut path from any block to any later one is a pure identity and
    ``dL/dx = dL/dy * (1 + dF/dx)`` holds with no ReLU mask. Zero-init sets ``conv2`` to 0.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int = 1,
        norm: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path_rate: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__(downsample, drop_path_rate, residual)
        if groups != 1 or base_width != 64 or se:
            raise OptionError("PreActBasicBlock supports only groups=1, base_width=64, se=False")
        self.bn1 = norm(inplanes)
        self.relu = nn.ReLU()  # not in place: x itself is the shortcut
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation)
        self.bn2 = norm(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return self.add_shortcut(out, x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


def make_shortcut(kind: str, cin: int, cout: int, stride: int, norm: NormLayer) -> nn.Module | None:
    """The shortcut ``S`` when the shape changes (``None``: identity).

    kind: ``"conv"``  1x1 strided conv + norm (torchvision, He 2015 option B): ``downsample.0/1``;
          ``"avg"``   2x2 avg-pool then 1x1 conv + norm (ResNet-D, timm ``avg_down``):
                      ``downsample.1/2``; in a dilated stage the pool is skipped (timm uses a
                      stride-1 "same" pool there, so dilated ``resnet50d`` differs from timm);
          ``"pad"``   option A, zero-pad channels, no parameters.
    """
    if stride == 1 and cin == cout:
        return None
    if kind == "conv":
        return nn.Sequential(conv1x1(cin, cout, stride), norm(cout))
    if kind == "avg":
        pool = (
            nn.Identity()
            if stride == 1
            else nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        )
        return nn.Sequential(pool, conv1x1(cin, cout), norm(cout))
    if kind == "pad":
        return PadShortcut(cin, cout, stride)
    raise OptionError(f"shortcut={kind!r} is not known; expected conv, avg or pad")
