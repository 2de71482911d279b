"""Typed configuration shared by every task (the engine's knobs) and the loader that checks it.

Each task's config is a dataclass with ``model``, ``data`` and ``train`` fields; ``train`` is
``TrainConfig`` below. ``load_config`` layers three sources, later ones winning::

    typed defaults (OmegaConf.structured(config_class))  <-  YAML file  <-  key=value overrides

and turns every OmegaConf failure into one ``ConfigError`` line that names the source, the
dotted key, the value and what was expected (with the closest valid keys for a typo).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, Node, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from backbones.registry import OptionError, close_matches


class ConfigError(OptionError):
    """A user mistake in a config file, a ``key=value`` override or a path it names."""


@dataclass
class TrainConfig:
    """Engine settings; units in the comments."""

    device: str = "auto"  # "auto" = cuda when present, else cpu; or "cpu", "cuda", "cuda:1"
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on CPU)
    epochs: int = 10  # upper bound; max_minutes / max_steps may end the run sooner
    max_minutes: float = 0.0  # time budget in minutes; 0 = no budget, schedule over epochs
    max_steps: int = 0  # optimizer steps budget; 0 = off (then epochs x steps per epoch)
    batch_size: int = 64  # images per process per micro-batch
    num_workers: int = 0  # DataLoader worker processes
    optimizer: str = "sgd"  # "sgd" (nesterov) or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum / AdamW beta1
    weight_decay: float = 5e-4  # on conv/linear weights only, never on norm or bias params
    schedule: str = "cosine"  # "cosine" (warm-up + cosine) or "onecycle" (triangular)
    warmup: float = 0.03  # fraction of the run spent warming up
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_grad: float = 0.0  # max global grad norm; 0 = off
    ema: float = 0.0  # largest EMA decay per step (e.g. 0.999), warmed up from 0; 0 = off
    amp: str = "none"  # "none", "bf16" or "fp16" (CUDA only; ignored on CPU)
    channels_last: bool = False  # NHWC memory format for model weights
    compile: bool = False  # torch.compile the training forward; the first steps pay for compiling
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    eval_every: int = 1  # epochs between validations (always one at the end)
    log_every: int = 20  # steps between metrics.jsonl rows (and DDP time syncs)
    checkpoint_minutes: float = 10.0  # minutes between mid-epoch last.pt saves; 0 = epoch ends
    diagnostics_every: int = 0  # steps between residual diagnostics rows (tasks/residual); 0 = off
    stop_after_steps: int = 0  # debug: save last.pt and stop at this step, as if killed; 0 = off


CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("cosine", "onecycle"),
    "train.amp": ("none", "bf16", "fp16"),
}


# the smallest value each key takes where a config has it (a 0 batch divides by zero deep in
# the loop)
MINIMUMS: dict[str, float] = {
    "train.batch_size": 1,
    "train.grad_accum": 1,
    "train.epochs": 1,
    "train.max_minutes": 0,
    "train.max_steps": 0,
    "train.lr": 0,
    "train.num_workers": 0,
    "train.momentum": 0,
    "train.weight_decay": 0,
    "train.warmup": 0,
    "train.clip_grad": 0,
    "train.ema": 0,
    "train.eval_every": 1,
    "train.log_every": 1,
    "train.checkpoint_minutes": 0,
    "train.diagnostics_every": 0,
    "train.stop_after_steps": 0,
    "model.aux_weight": 0,  # segmentation loss weights: a negative one would be silently off
    "model.dice_weight": 0,
    "model.lovasz_weight": 0,
}

# fractions: warm-up of the run, momentum (SGD) / beta1 (AdamW)
MAXIMUMS: dict[str, float] = {"train.warmup": 1, "train.momentum": 1}


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config node (``["model.backbone", "train.lr", ...]``)."""
    keys: list[str] = []
    for key in node:
        full = f"{prefix}{key}"
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            keys += _leaf_keys(child, full + ".")
        else:
            keys.append(full)
    return keys


def _expected_type(config_class: type, dotted: str) -> str:
    """The declared type of ``dotted`` in ``config_class`` as text, e.g. ``float``."""
    cls: Any = config_class
    hint: Any = None
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return "?"
        hint = typing.get_type_hints(cls).get(part)
        cls = hint
    name = getattr(hint, "__name__", None)
    return name if name and not typing.get_args(hint) else str(hint).replace("typing.", "")


def _raise_clean(err: OmegaConfBaseException, source: str, base: Any, config_class: type) -> None:
    """Re-raise an OmegaConf error as one ``ConfigError`` line."""
    key = str(getattr(err, "full_key", "") or getattr(err, "key", "") or "")
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        valid = _leaf_keys(base)
        hint = close_matches(key, valid, n=3)
        last = key.rsplit(".", 1)[-1]
        hint += [k for k in valid if k.rsplit(".", 1)[-1] == last and k not in hint]
        did_you_mean = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise ConfigError(f"unknown config key {key!r} {source}{did_you_mean}") from None
    value = getattr(err, "value", None)
    value = value._value() if isinstance(value, Node) else value
    expected = _expected_type(config_class, key) if key else "?"
    empty = ""  # a shell turns key="" into key=, which OmegaConf reads as None
    if value is None and expected == "str" and source == "on the command line":
        empty = f"; for an empty string write '{key}=\"\"'"
    raise ConfigError(
        f"config key {key!r} {source}: got {value!r} ({type(value).__name__}), expected "
        f"{expected}{empty}"
    ) from None


def _yaml_problem(err: Exception, text: str) -> str:
    """A YAML parser error as one line: the problem and where (PyYAML's text spans lines)."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if not problem:
        return " ".join(str(err).split())
    if mark is None:
        return str(problem)
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    where = f" at line {mark.line + 1}, column {mark.column + 1}"
    tab = " (a tab: YAML indents with spaces only)" if "\t" in line else ""
    return f"{problem}{where}{tab}"


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        found = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {found}; expected a YAML file")
    text = ""
    try:
        text = path.read_text(encoding="utf-8")
        top = yaml.safe_load(text)  # OmegaConf reads a lone scalar `abc` as {"abc": None}
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML: {_yaml_problem(err, text)}"
        ) from None
    if (top is not None and not isinstance(top, dict)) or not isinstance(loaded, DictConfig):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys (section: then indented "
            f"key: value lines), not a {type(top).__name__}"
        )
    return loaded


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. train.lr=0.05)"
            )
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {err.msg}") from None


def load_config(
    config_class: type,
    yaml_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    yaml_text: str | None = None,
) -> Any:
    """Merge typed defaults, a YAML file (or ``yaml_text``, e.g. a checkpoint's stored config)
    and ``key=value`` overrides.

    Returns an instance of ``config_class`` (nested dataclasses, types checked). Raises
    ``ConfigError`` for an unknown key, a wrong type, a bad choice or a missing required key.
    """
    cfg = OmegaConf.structured(config_class)
    sources: list[tuple[DictConfig, str]] = []
    if yaml_path is not None:
        sources.append((_read_yaml(Path(yaml_path)), f"in {str(yaml_path)!r}"))
    if yaml_text is not None:
        sources.append((OmegaConf.create(yaml_text), "in the stored config"))
    if overrides:
        for item in overrides:  # `data.train=$DATA` with DATA unset: not "no data.train"
            key, _, value = item.partition("=")
            if value == "" and _expected_type(config_class, key).startswith("Optional"):
                raise ConfigError(
                    f"config key {key!r} on the command line has an empty value (an unset shell "
                    f"variable?); expected a value, or {key}=null to unset it"
                )
        sources.append((_parse_overrides(overrides), "on the command line"))
    for layer, source in sources:
        for key in layer:  # `train=1`, `model: 3`: OmegaConf's error names no key
            section = cfg._get_node(key) if key in cfg else None
            if isinstance(section, DictConfig) and not isinstance(layer._get_node(key), DictConfig):
                raise ConfigError(
                    f"config key {key!r} {source}: got {layer[key]!r}, expected a section of "
                    f"keys ({key}.KEY=VALUE on the command line, '{key}:' with indented keys "
                    "in YAML)"
                )
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            _raise_clean(err, source, cfg, config_class)
    try:
        obj = _checked_object(cfg)
    except OmegaConfBaseException as err:  # `${...}` interpolations resolve here
        key = str(getattr(err, "full_key", "") or "")
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split(".") if key else []:
            raw = raw.get(part) if isinstance(raw, dict) else None
        raise ConfigError(
            f"config key {key!r} = {raw!r}: cannot resolve it ({err.msg.splitlines()[0]})"
        ) from None
    return obj


def _checked_object(cfg: DictConfig) -> Any:
    """Required, range and choice checks of a merged config; its dataclass instance."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config keys not set: {', '.join(missing)}")
    for key in _leaf_keys(cfg):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {key!r} = {value!r}: expected a finite number")
    for key, low in MINIMUMS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value < low:
            raise ConfigError(f"config key {key!r} = {value!r}: expected a value >= {low:g}")
    for key, high in MAXIMUMS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value > high:
            raise ConfigError(f"config key {key!r} = {value!r}: expected a value <= {high:g}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in allowed:
            hint = close_matches(str(value), list(allowed))
            did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"config key {key!r} = {value!r} is not one of {', '.join(allowed)}{did_you_mean}"
            )
    return OmegaConf.to_object(cfg)


def config_to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass instance (what ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def require_path(path: str | Path | None, key: str, *, kind: str = "folder") -> Path:
    """Check that a configured path exists; for tasks' ``data.*`` and ``model.*`` paths.

    kind: ``"folder"`` or ``"file"``. Raises ``ConfigError`` naming the key and the path.
    """
    if path is None or str(path) == "":
        raise ConfigError(f"config key {key!r} is not set; expected a {kind} path ({key}=PATH)")
    resolved = Path(path).expanduser()
    exists = resolved.is_dir() if kind == "folder" else resolved.is_file()
    if not exists:
        raise ConfigError(f"config key {key!r}: {kind} {str(path)!r} does not exist")
    return resolved
