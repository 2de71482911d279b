"""The contract every backbone follows: a dict of named feature maps plus declared metadata.

Heads and necks read ``feature_info`` instead of hard-coding channel counts, so any
registered backbone (ours or a ``timm:`` wrapper) plugs into any head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from backbones.registry import Registry


@dataclass(frozen=True)
class FeatureInfo:
    """One feature level a backbone returns.

    name:     key in the forward output, ``"c1"``..``"c5"`` (``c{k}`` has nominal stride 2**k).
    channels: channels of that map.
    stride:   true reduction of that map relative to the input, after any dilation
              (with ``output_stride=16`` the ``c5`` level has stride 16, not 32).
    """

    name: str
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: ``forward(x [B, in_chans, H, W]) -> OrderedDict[name, Tensor[B, C, h, w]]``.

    Subclasses set ``feature_info`` (one entry per returned level, in output order) and
    ``in_chans``. ``check_input`` turns a wrong input into one readable error instead of a
    convolution error from deep inside torch.
    """

    feature_info: tuple[FeatureInfo, ...]
    in_chans: int
    frozen: tuple[str, ...] = ()  # submodule paths frozen by ``freeze``

    def freeze(self, names: list[str]) -> None:
        """Freeze the submodules at ``names``: no gradients, and their norm layers stay in
        eval mode through ``.train()`` (``frozen_stages`` for fine-tuning)."""
        self.frozen = tuple(names)
        for name in self.frozen:
            self.get_submodule(name).requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Like ``nn.Module.train`` but frozen submodules stay in eval mode."""
        super().train(mode)
        for name in self.frozen:
            self.get_submodule(name).eval()
        return self

    @property
    def out_channels(self) -> dict[str, int]:
        """``{level name: channels}`` in output order."""
        return OrderedDict((f.name, f.channels) for f in self.feature_info)

    @property
    def strides(self) -> dict[str, int]:
        """``{level name: stride}`` in output order."""
        return OrderedDict((f.name, f.stride) for f in self.feature_info)

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape [B, {self.in_chans}, H, W], "
                f"got shape {list(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} was built with in_chans={self.in_chans} but the input has "
                f"{x.shape[1]} channels (shape {list(x.shape)}); build it with "
                f"in_chans={x.shape[1]} or convert the images"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects a float tensor, got {x.dtype}; "
                "convert uint8 images with x.float() / 255 and normalise them"
            )


BACKBONES: Registry[Callable[..., Backbone]] = Registry(
    "backbone",
    listing="`python tools/list_backbones.py` prints them; timm:<name> takes any timm model",
)
