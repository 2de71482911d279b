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

DYNAMIC_SIZE_OPTIONS: tuple[dict[str, bool], ...] = (
    {"dynamic_img_size": True, "dynamic_img_pad": True},  # ViT, DeiT, EVA, ...
    {"dynamic_img_size": True},  # Swin: sizes that are multiples of its patch and merges
    {},  # CNNs
)


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
        # Any input size, as the CNNs: transformers built for one (a ViT's 224x224) take
        # dynamic_img_size, and a ViT pads a size that is no multiple of its patch
        # (dynamic_img_pad). The first set of options the model's constructor takes is kept.
        with torch.device("meta"):  # metadata only: no memory, no init cost
            for size_kwargs in DYNAMIC_SIZE_OPTIONS:
                try:
                    nominal = timm.create_model(
                        model_name, features_only=True, in_chans=in_chans, **size_kwargs
                    )
                    break
                except TypeError:
                    if not size_kwargs:
                        raise
            full = timm.create_model(model_name, in_chans=in_chans)
        levels = nominal.feature_info.get_dicts()
        # the deepest level of each stride >= 4 (a ViT's blocks all have stride 16: one
        # level, not several named alike)
        by_stride = {d["reduction"]: d["index"] for d in levels if d["reduction"] >= 4}
        if out_indices is None:
            out_indices = sorted(by_stride.values())
        valid = [d["index"] for d in levels]
        if not out_indices or any(i not in valid for i in out_indices):
            # timm numbers a model's own levels (a ConvNeXt's stride-4 level is 0, a ViT's
            # blocks 9..11), so the tasks' defaults for our ResNets (detection: [2, 3, 4] =
            # c3..c5) may not fit: say which index has which stride
            strides = ", ".join(f"{i} (stride {s})" for s, i in sorted(by_stride.items()))
            raise OptionError(
                f"{self.name}: out_indices={tuple(out_indices)!r} is out of range; expected "
                f"indices among {valid}; by stride: {strides}"
            )
        deepest = max(d["reduction"] for d in levels if d["index"] in out_indices)
        # dilation only where the levels asked for go deeper than output_stride (a ViT's
        # stride-16 blocks already meet output_stride=16: nothing to ask of its constructor)
        kwargs = {"output_stride": output_stride} if output_stride < deepest else {}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        try:
            self.model = timm.create_model(
                model_name, pretrained=False, features_only=True, in_chans=in_chans,
                out_indices=tuple(out_indices), **size_kwargs, **kwargs,
            )  # fmt: skip
        except (TypeError, AssertionError, ValueError, NotImplementedError) as err:
            # the model's constructor lacks an option (a ViT: dilation) or refuses its value
            # (GhostNet asserts output_stride == 32)
            if not kwargs:
                raise
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
        fmt = getattr(self.model, "output_fmt", "NCHW")  # Swin's levels are NHWC
        self.channels_last_output = getattr(fmt, "value", fmt) == "NHWC"
        self.weights_target = self.model
        self._describe_renames(set(full.state_dict()))
        modules, params = self._frozen_children(levels, frozen_stages)
        for name in params:  # held by a container on the way to a stage: a ViT's pos_embed
            self.model.get_parameter(name).requires_grad_(False)
        self.freeze([f"model.{n}" for n in modules])

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

    def _frozen_children(
        self, levels: list[dict], frozen_stages: int
    ) -> tuple[list[str], list[str]]:
        """Submodules of timm's feature net up to the module of the k-th stage level.

        The level's module is found in any of timm's feature nets: flattened children
        (``stages.0`` -> ``stages_0``), a model-specific one keeping the nesting (EfficientNet,
        MobileNetV3: ``blocks.1``) or a wrapper (a ViT's ``model.blocks.9``). Everything
        registered before it on the way down is frozen with it; parameters held directly by
        the containers on that way (a ViT's ``pos_embed``, ``cls_token``) count as stem."""
        stages = [d["module"] for d in levels if d["reduction"] >= 4]
        if not -1 <= frozen_stages <= len(stages):
            raise OptionError(
                f"{self.name}: frozen_stages={frozen_stages} is out of range; expected -1 "
                f"(none), 0 (stem) .. {len(stages)}"
            )
        if frozen_stages < 0:
            return [], []
        target = stages[frozen_stages - 1] if frozen_stages else stages[0]
        path = self._module_path(target)
        if path is None:
            raise OptionError(
                f"{self.name}: frozen_stages={frozen_stages} reaches level {target!r}, which "
                "out_indices leaves out of the model; expected frozen_stages up to the last "
                "level returned"
            )
        names, params, parent, prefix = [], [], self.model, ""
        for part in path.split("."):
            params += [prefix + name for name, _ in parent.named_parameters(recurse=False)]
            for child, _ in parent.named_children():
                if child == part:
                    break
                names.append(prefix + child)
            parent, prefix = parent.get_submodule(part), f"{prefix}{part}."
        return (names + [path] if frozen_stages else names), params

    def _module_path(self, module: str) -> str | None:
        """Where timm's ``feature_info`` module name lives in ``self.model`` (None: pruned)."""
        for path in (module.replace(".", "_"), module, f"model.{module}"):
            try:
                self.model.get_submodule(path)
            except AttributeError:
                continue
            return path
        return None

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        self.check_input(x)
        feats = self.model(x)
        if self.channels_last_output:  # [B, H, W, C] -> [B, C, H, W], as feature_info says
            feats = [t.permute(0, 3, 1, 2) for t in feats]
        return OrderedDict((f.name, t) for f, t in zip(self.feature_info, feats, strict=True))
