"""The contract between a task (data + model + loss + metrics) and the shared engine.

The engine (``tasks/engine.py``) owns the loop, devices, AMP, DDP, schedules, checkpoints and
logging; it never assumes one loss or one metric. A task supplies everything else::

    task = TASKS.create("classify", cfg=cfg)          # cfg: the task's merged config
    train_set, val_set = task.build_datasets()        # sets task.class_names
    model = task.build_model()                        # nn.Module with .backbone
    for batch in loader(train_set, collate_fn=task.collate):
        losses = task.train_step(model, batch, device)  # {"loss": total, ...parts}
    metrics = task.evaluate(model, val_loader, device)  # {task.primary_metric: float, ...}
    task.visualize(model, val_set, run_dir, device)     # PNGs for the run folder
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from backbones.registry import Registry
from tasks.config import ConfigError


class Task(ABC):
    """One kind of problem. Subclasses are registered in ``TASKS`` under ``name``.

    ``config_class`` is a dataclass with at least ``model``, ``data`` and ``train`` fields;
    ``train`` is ``tasks.config.TrainConfig`` (the engine's knobs), the other two belong to
    the task. ``primary_metric`` names the key of ``evaluate()``'s result that picks the best
    checkpoint (higher is better).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    primary_metric: ClassVar[str]
    # predict() writes files named after each image's stem (pictures, masks), not just JSON
    writes_image_files: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        data = getattr(cfg, "data", None)
        if getattr(data, "val", None) is not None and getattr(data, "train", 0) is None:
            raise ConfigError(
                f"data.val={data.val!r} is set but data.train is not: without data.train the "
                "built-in synthetic set is used for both (set data.train too)"
            )
        self.cfg = cfg
        self.class_names: list[str] = []
        # Fraction of the training run done (0..1; of the time budget when there is one), set
        # by the engine before every optimizer step: for schedules a task owns (image size).
        self.progress = 0.0

    @abstractmethod
    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """Train and validation sets; fills ``self.class_names`` from the data."""

    def build_val_dataset(self) -> Dataset:
        """The validation set alone (``tools/eval.py``); override when building the training
        set is expensive. Fills ``self.class_names`` like ``build_datasets``."""
        return self.build_datasets()[1]

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model for ``self.class_names``; it has a ``.backbone`` attribute."""

    def val_batch_size(self, val_set: Dataset) -> int:
        """Images per validation batch of ``val_set`` (default: ``train.batch_size``)."""
        return self.cfg.train.batch_size

    def collate(self, samples: Sequence[Any]) -> Any:
        """Turns a list of dataset items into one batch (default: stack tensors)."""
        return torch.utils.data.default_collate(samples)

    @abstractmethod
    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        """Forward + loss on one batch; returns ``{"loss": total, **parts}`` (scalars)."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, batches: Iterable[Any], device: torch.device
    ) -> dict[str, Any]:
        """Metrics over a validation loader; must contain ``primary_metric`` as a float."""

    def visualize(
        self, model: nn.Module, val_set: Dataset, run_dir: Path, device: torch.device
    ) -> list[Path]:
        """Writes the task's pictures (confusion matrix, predictions) into ``run_dir``."""
        return []

    def predict(
        self,
        model: nn.Module,
        image_paths: Sequence[str | Path],
        out_dir: Path | None,
        device: torch.device,
    ) -> list[dict[str, Any]]:
        """Runs ``model`` (eval mode) on image files for ``tools/predict.py``: prints one line
        per image and, when ``out_dir`` is given, writes the task's outputs there."""
        raise NotImplementedError(f"task {self.name!r} does not implement predict()")


def write_predictions(out_dir: Path | None, results: list[dict[str, Any]]) -> None:
    """``out_dir/predictions.json`` (the folder made if needed) for ``Task.predict``; nothing
    when ``out_dir`` is None (``tools/predict.py`` without ``--out`` only prints)."""
    if out_dir is None:
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "predictions.json").write_text(json.dumps(results, indent=2))


TASKS: Registry[type[Task]] = Registry("task")
