"""``create_backbone("timm:<name>")``: any timm model's ``features_only`` net under our contract.

Level names are ``c{log2(nominal reduction)}`` (reduction at output stride 32), so a timm
ResNet's levels are named as ours (``c1`` stride 2 .. ``c5`` stride 32) and a ConvNeXt's are
``c2..c5``; ``FeatureInfo.stride`` is timm's true reduction after dilation. By default the
levels with nominal stride >= 4 are returned (the stages, not a stride-2 stem).

Weights: ``pretrained=PATH`` (or ``load_weights``) reads a *full* timm checkpoint: timm's
feature wrapper renames flattened modules (``stages.0`` -> ``stages_0``) and drops the
classifier and unused later stages; ``weights_aliases``/``unused_prefixes`` describe that.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from backbones.base import Backbone, FeatureInfo
from backbones.registry import OptionError, RegistryError, close_matches
from backbones.resnet import OUTPUT_STRIDES


class TimmBackbone(Backbone):
    """``forward(x[B, in_chans, H, W]) -> OrderedDict{c_k: Tensor[B, C_k, H/s_k, W/s_k]}``.

    Options: ``in_chans``, ``out_indices`` (timm's feature indices), ``output_stride`` (8, 16,
    32; not every timm model supports dilation), ``frozen_stages`` (-1 none, 0 stem, k: stem
    and the first k stage levels), ``norm_layer`` (``"batchnorm"`` or ``"frozen_batchnorm"``),
    ``drop_path_rate``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        output_stride: int = 32,
        frozen_stages: int = -1,
        norm_layer: str = "batchnorm",
        drop_path_rate: float = 0.0,
    ) -> None:
        import timm

        super().__init__()
        self.name, self.in_chans = f"timm:{model_name}", in_chans
        if not timm.is_model(model_name):
            hint = close_matches(model_name, timm.list_models())
            raise RegistryError(
                f"unknown timm model {model_name!r}"
                + (f"; did you mean {', '.join('timm:' + h for h in hint)}?" if hint else "")
            )
        if output_stride not in OUTPUT_STRIDES:
            raise OptionError(
                f"{self.name}: output_stride={output_stride!r} is not supported; expected one "
                f"of {', '.join(map(str, OUTPUT_STRIDES))}"
            )
        if norm_layer not in ("batchnorm", "frozen_batchnorm"):
            raise OptionError(
                f"{self.name}: norm_layer={norm_layer!r}; timm backbones take 'batchnorm' or "
                "'frozen_batchnorm'"
            )
        with torch.device("meta"):  # metadata only: no memory, no init cost
            nominal = timm.create_model(model_name, features_only=True, in_chans=in_chans)
            full = timm.create_model(model_name, in_chans=in_chans)
        levels = nominal.feature_info.get_dicts()
        if out_indices is None:  # the deepest level of each stride >= 4 (a ViT's blocks
            # all have stride 16: one level, not several named alike)
            last = {d["reduction"]: d["index"] for d in levels if d["reduction"] >= 4}
            out_indices = sorted(last.values())
        valid = [d["index"] for d in levels]
        if not out_indices or any(i not in valid for i in out_indices):
            raise OptionError(
                f"{self.name}: out_indices={tuple(out_indices)!r} is out of range; expected "
                f"indices among {valid}"
            )
        kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        try:
            self.model = timm.create_model(
                model_name, pretrained=False, features_only=True, in_chans=in_chans,
                out_indices=tuple(out_indices), **kwargs,
            )  # fmt: skip
        except TypeError as err:  # the model's constructor lacks an option (a ViT: dilation)
            raise OptionError(
                f"{self.name} does not take {', '.join(f'{k}={v}' for k, v in kwargs.items())} "
                f"({err}); expected {', '.join(kwargs)} left at the default for it"
            ) from None
        if norm_layer == "frozen_batchnorm":
            self.model = timm.layers.freeze_batch_norm_2d(self.model)
        nominal_stride = {d["index"]: d["reduction"] for d in levels}
        self.feature_info = tuple(
            FeatureInfo(
                f"c{round(math.log2(nominal_stride[d['index']]))}", d["num_chs"], d["reduction"]
            )
            for d in self.model.feature_info.get_dicts()
        )
        names = [f.name for f in self.feature_info]
        if len(set(names)) < len(names):  # levels are looked up by name
            raise OptionError(
                f"{self.name}: out_indices={tuple(out_indices)!r} picks levels of one stride "
                f"({names}); expected one level per stride"
            )
        self.weights_target = self.model
        self._describe_renames(set(full.state_dict()))
        self.freeze([f"model.{n}" for n in self._frozen_children(levels, frozen_stages)])

    def _describe_renames(self, full_keys: set[str]) -> None:
        """``weights_aliases``: full-model key -> our key; ``unused_prefixes``: dropped parts."""
        self.weights_aliases: dict[str, str] = {}
        for key in self.model.state_dict():
            top, _, rest = key.partition(".")
            original = ".".join(top.rsplit("_", 1)) + "." + rest
            if original != key and original in full_keys and key not in full_keys:
                self.weights_aliases[original] = key
        kept = {k.split(".")[0] for k in (*self.model.state_dict(), *self.weights_aliases)}
        self.unused_prefixes = tuple(f"{t}." for t in {k.split(".")[0] for k in full_keys} - kept)

    def _frozen_children(self, levels: list[dict], frozen_stages: int) -> list[str]:
        """Children of timm's feature net up to the module of the k-th stage level."""
        stages = [d["module"].replace(".", "_") for d in levels if d["reduction"] >= 4]
        if not -1 <= frozen_stages <= len(stages):
            raise OptionError(
                f"{self.name}: frozen_stages={frozen_stages} is out of range; expected -1 "
                f"(none), 0 (stem) .. {len(stages)}"
            )
        if frozen_stages < 0:
            return []
        children = [n for n, _ in self.model.named_children()]
        stop = children.index(stages[frozen_stages - 1]) + 1 if frozen_stages else None
        return children[: stop if stop is not None else children.index(stages[0])]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        self.check_input(x)
        feats = self.model(x)
        return OrderedDict((f.name, t) for f, t in zip(self.feature_info, feats, strict=True))
