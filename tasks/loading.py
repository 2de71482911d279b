"""``load_model``: a ready model from a weights file or a run folder, nothing else needed.

Weights files carry their task name, merged config and class names as metadata
(``tasks.checkpoint``), so the model is rebuilt through the task registry exactly as trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from tasks import checkpoint as ckpt
from tasks.base import TASKS, Task
from tasks.config import load_config


def load_task(metadata: dict[str, str], source: Path, overrides: Sequence[str] = ()) -> Task:
    """The task of a weights file, configured as in training (then ``overrides``), with its
    class names."""
    ckpt.check_metadata(metadata, source)
    task_cls = TASKS.get(metadata["task"])
    cfg = load_config(task_cls.config_class, overrides=overrides, yaml_text=metadata["config"])
    # The weights come from the checkpoint: do not re-read the training-time init file.
    if hasattr(cfg.model, "backbone_weights"):
        cfg.model = replace(cfg.model, backbone_weights=None)
    task = task_cls(cfg)
    task.class_names = list(json.loads(metadata["class_names"]))
    return task


def load_model(
    path_or_run_dir: str | Path,
    device: str | torch.device = "cpu",
    overrides: Sequence[str] = (),
) -> tuple[nn.Module, Task]:
    """``(model in eval mode on device, its task)`` from a ``.safetensors`` file or run folder.

    A run folder means its best weights (``model.safetensors``), else ``last.safetensors``.
    """
    path = ckpt.find_weights(path_or_run_dir)
    state, metadata = ckpt.read_weights(path)
    task = load_task(metadata, path, overrides)
    model = task.build_model()
    ckpt.load_into(model, state, path)
    return model.to(device).eval(), task
