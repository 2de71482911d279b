"""``model.backbone_weights=PATH``: initialise a task model's backbone from a checkpoint.

``backbones.weights.load_weights`` does the matching: it accepts a whole-model checkpoint of
any task (keys ``backbone.*``, e.g. a classification run's ``model.safetensors`` initialising a
detection backbone; a run folder means that file) or a bare backbone state dict, and ignores a
classifier the backbone lacks.
Here its errors become one ``ConfigError`` that names the config key.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from backbones.weights import load_weights
from tasks.checkpoint import find_weights
from tasks.config import ConfigError


def load_backbone_weights(model: nn.Module, path: str | Path) -> str:
    """Load ``path`` into ``model.backbone`` (strict); returns the loader's one-line report."""
    if not hasattr(model, "backbone"):
        raise ConfigError(
            f"model.backbone_weights={str(path)!r}: {type(model).__name__} has no .backbone"
        )
    try:
        file = Path(path).expanduser()
        if file.is_dir():  # a run folder, as tools/eval.py and predict.py take it: its best
            file = find_weights(file)
        return str(load_weights(model.backbone, file, strict=True))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"config key 'model.backbone_weights': {err}") from None
