"""Load a local checkpoint into a backbone: never downloads, never runs pickled code.

Accepted files: torchvision/timm ``.pth``/``.pt``/``.bin`` state dicts, our own checkpoints
(a dict holding the weights under ``"model"``/``"state_dict"``), and ``.safetensors``
(a bare backbone or a whole task model whose backbone keys start with ``backbone.``).
The key prefix (``module.``, ``_orig_mod.``, ``backbone.``, ...) is chosen as the one whose
stripped keys match the most module keys; keys outside that prefix (a task model's head)
are ignored. ``*.num_batches_tracked`` keys are ignored both ways (FrozenBatchNorm2d lacks
them), and a classifier (``fc.``/``head.``/``classifier.``) that the module does not have is
"expected unused": a torchvision ImageNet file loads into a ``num_classes=0`` backbone.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.registry import OptionError

FILE_PREFIXES = (
    "", "module.", "_orig_mod.", "backbone.", "module.backbone.", "model.", "backbone.model.",
)  # fmt: skip
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")
WRAPPED_KEYS = ("state_dict", "model", "model_state_dict", "module")


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the module (``strict=True``); the message lists the keys."""


@dataclass
class LoadReport:
    """What ``load_weights`` did. ``mismatched`` holds ``(key, file_shape, model_shape)``."""

    path: str
    prefix: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        text = f"{self.path}: loaded {len(self.loaded)} tensors"
        if self.prefix:
            text += f" (file prefix {self.prefix!r} stripped)"
        if self.unused:
            text += f", {len(self.unused)} expected unused (e.g. {self.unused[0]})"
        return text + "".join(f"; {line}" for line in self.problems(3))

    def problems(self, first: int = 5) -> list[str]:
        """Human lines for the missing, unexpected and shape-mismatched keys (first few)."""
        lines = []
        for label, keys in (("missing in file", self.missing), ("unexpected", self.unexpected)):
            if keys:
                lines.append(f"{len(keys)} {label}: {', '.join(keys[:first])}")
        if self.mismatched:
            shown = ", ".join(
                f"{k} file {list(f)} vs model {list(m)}" for k, f, m in self.mismatched[:first]
            )
            lines.append(f"{len(self.mismatched)} shape mismatches: {shown}")
        return lines


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local checkpoint; refuses pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {str(path)!r} does not exist")
    unreadable = (
        f"{str(path)!r} is not a readable checkpoint; expected a .safetensors file or a "
        "torch.save'd state dict (.pt/.pth)"
    )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...: a bad file
            raise OptionError(f"{unreadable} ({err})") from None
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor a pickle
        raise OptionError(unreadable)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise OptionError(
            f"refused to load {str(path)!r}: it is a pickle that holds code or objects other "
            f"than tensors (torch.load weights_only=True said: {str(err).splitlines()[0]}). "
            "Re-save it as a plain state dict or a .safetensors file"
        ) from None
    except Exception as err:  # noqa: BLE001 - a truncated or damaged file fails many ways
        raise OptionError(f"{unreadable} ({type(err).__name__}: {err})") from None
    for key in WRAPPED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    odd = [k for k, v in obj.items() if not isinstance(v, Tensor)] if isinstance(obj, dict) else []
    if not isinstance(obj, dict) or odd:
        found = f"a dict whose {odd[0]!r} is not a tensor" if odd else type(obj).__name__
        raise OptionError(
            f"{str(path)!r} is not a state dict: expected a dict of tensors (or one under "
            f"{', '.join(repr(k) for k in WRAPPED_KEYS)}), got {found}"
        )
    return obj


def _best_prefix(keys: list[str], wanted: set[str] | dict[str, str]) -> str:
    """The file prefix whose stripped keys hit the most module keys (ties: shortest)."""

    def hits(prefix: str) -> int:
        return sum(k.startswith(prefix) and k[len(prefix) :] in wanted for k in keys)

    return max(FILE_PREFIXES, key=lambda p: (hits(p), -len(p)))


def match_state_dict(
    state: dict[str, Tensor],
    module: nn.Module,
    path: str,
    unused_prefixes: tuple[str, ...] = CLASSIFIER_PREFIXES,
    aliases: dict[str, str] | None = None,
) -> tuple[LoadReport, dict[str, Tensor]]:
    """Compare a state dict with ``module``; returns the report and the fitting tensors
    under the module's key names. File keys under an ``unused_prefixes`` entry that the
    module lacks altogether are reported as unused; ``aliases`` maps file key names to
    module key names (the report speaks in file names)."""
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    names = {**(aliases or {}), **{k: k for k in own}}
    prefix = _best_prefix(list(state), names)
    report, fitting = LoadReport(str(path), prefix), {}
    absent = [p for p in unused_prefixes if not any(k.startswith(p) for k in own)]
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith("num_batches_tracked"):
            continue
        name = key[len(prefix) :]
        if name not in names:
            unused = any(name.startswith(p) for p in absent)
            (report.unused if unused else report.unexpected).append(name)
        elif value.shape != own[names[name]].shape:
            report.mismatched.append((name, tuple(value.shape), tuple(own[names[name]].shape)))
        else:
            report.loaded.append(name)
            fitting[names[name]] = value
    seen = set(fitting) | {names[k] for k, _, _ in report.mismatched}
    report.missing = [k for k in own if k not in seen]
    return report, fitting


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load the local file ``path`` into ``module``; returns a ``LoadReport``.

    strict=True: any missing, unexpected or shape-mismatched key raises
    ``WeightsMismatchError`` listing the first few of each (with shapes) and nothing is
    loaded. strict=False: the tensors that fit are loaded and the rest are in the report.
    A wrapper can steer loading with three attributes: ``weights_target`` (the submodule the
    file's keys address), ``unused_prefixes`` (parts of the source model it dropped) and
    ``weights_aliases`` (file key -> module key, for renamed modules).
    """
    target = getattr(module, "weights_target", module)
    report, fitting = match_state_dict(
        read_state_dict(path),
        target,
        str(path),
        getattr(module, "unused_prefixes", CLASSIFIER_PREFIXES),
        getattr(module, "weights_aliases", None),
    )
    if strict and not report.ok:
        raise WeightsMismatchError(
            f"{report.path} does not fit {getattr(module, 'name', type(module).__name__)}: "
            + "; ".join(report.problems())
            + ". Check the backbone name and options, or pass strict=False to load what fits"
        )
    target.load_state_dict(fitting, strict=False)
    return report
