"""``_toy``: the engine's self-test task (tiny conv net on synthetic in-memory images).

It exercises everything the engine touches (``.backbone``, BatchNorm, metrics, checkpoints,
predict) in a second of CPU time, so engine tests and ``torchrun`` smoke tests need no data
and no other task. Class ``k``'s images are a fixed random pattern plus Gaussian noise, so a
model that learns gets well above chance within a few dozen steps.

    python tools/train.py --task _toy --out /tmp/toy train.epochs=2
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional  # noqa: UP035 - OmegaConf structured configs need typing forms

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from tasks.base import TASKS, Task
from tasks.config import TrainConfig


@dataclass
class ToyModelConfig:
    backbone: str = "toy"  # only "toy" exists
    backbone_weights: Optional[str] = None  # noqa: UP045 - checkpoint loaded into model.backbone
    width: int = 8  # channels of the first conv


@dataclass
class ToyDataConfig:
    num_classes: int = 4
    train_size: int = 256  # images
    val_size: int = 128  # images
    image_size: int = 8  # pixels (square)
    noise: float = 2.0  # std of the noise around each class pattern
    seed: int = 0  # seed of the patterns and samples
    flip: float = 0.5  # probability of a horizontal flip in training (uses the global RNG)


def _toy_train() -> TrainConfig:
    return TrainConfig(device="cpu", epochs=3, batch_size=32, lr=0.05, log_every=4, warmup=0.1)


@dataclass
class ToyConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    train: TrainConfig = field(default_factory=_toy_train)


class ToyNet(nn.Module):
    """``[B, 3, S, S] -> logits [B, K]``: conv-BN-ReLU x2 backbone (stride 2), flatten + linear
    head (keeps the spatial layout that tells the class patterns apart)."""

    def __init__(self, width: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.fc = nn.Linear(2 * width * ((image_size + 1) // 2) ** 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x).flatten(1))


@TASKS.register("_toy")
class ToyTask(Task):
    name = "_toy"
    config_class = ToyConfig
    primary_metric = "accuracy"

    def build_datasets(self) -> tuple[TensorDataset, TensorDataset]:
        d = self.cfg.data
        gen = torch.Generator().manual_seed(d.seed)
        patterns = torch.randn(d.num_classes, 3, d.image_size, d.image_size, generator=gen)

        def sample(n: int) -> TensorDataset:
            labels = torch.randint(0, d.num_classes, (n,), generator=gen)
            noise = d.noise * torch.randn(n, 3, d.image_size, d.image_size, generator=gen)
            return TensorDataset(patterns[labels] + noise, labels)

        self.class_names = [f"class{k}" for k in range(d.num_classes)]
        return sample(d.train_size), sample(d.val_size)

    def build_model(self) -> ToyNet:
        return ToyNet(self.cfg.model.width, len(self.class_names), self.cfg.data.image_size)

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        flip = torch.rand(len(images)) < self.cfg.data.flip
        images = torch.where(flip.to(device)[:, None, None, None], images.flip(3), images)
        loss = F.cross_entropy(model(images), labels)
        return {"loss": loss}

    def evaluate(
        self, model: nn.Module, batches: Iterable[Any], device: torch.device
    ) -> dict[str, Any]:
        correct = total = 0
        loss_sum = torch.zeros((), device=device)
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
        return {"accuracy": correct / total, "loss": float(loss_sum) / total}

    def predict(
        self,
        model: nn.Module,
        image_paths: Sequence[str | Path],
        out_dir: Path | None,
        device: torch.device,
    ) -> list[dict[str, Any]]:
        """Top-1 class of each image (resized to ``data.image_size``, scaled to [-1, 1])."""
        size = self.cfg.data.image_size
        results = []
        for path in image_paths:
            image = Image.open(path).convert("RGB").resize((size, size))
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
            with torch.no_grad():
                probs = model(x.permute(2, 0, 1)[None].to(device)).softmax(1)[0]
            k = int(probs.argmax())
            results.append({"image": str(path), "class": self.class_names[k], "p": float(probs[k])})
            print(f"{path}: {self.class_names[k]} ({float(probs[k]):.3f})")
        return results
