"""The plain PyTorch loop a user would otherwise write: the baseline arm of the benchmarks.

ResNet-20 (He et al. 2015; our ``resnet20`` backbone + a linear layer), data held in memory,
pad-4 crop + flip per batch, SGD momentum 0.9, weight decay 5e-4, batch 128, a one-cycle LR
(linear up over the first 15%, linear down to 0) over a wall-clock budget, cross-entropy.
Nothing else: no label smoothing, no test-time augmentation, no channels_last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import create_backbone

CIFAR_MEAN = (125.3, 123.0, 113.9)  # 0..255 pixel units
CIFAR_STD = (63.0, 62.1, 66.7)


class PlainResNet20(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = create_backbone("resnet20", out_indices=(3,))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)["c4"].mean((2, 3)))


def _normalise(x: Tensor) -> Tensor:
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x.float() - mean) / std


def _pad_crop_flip(x: Tensor, pad: int = 4) -> Tensor:
    """Per-image random crop of the zero-padded batch and a random horizontal flip."""
    padded = F.pad(x, (pad,) * 4)
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    flip = torch.rand(len(x)) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(
        int((model(_normalise(x[i : i + batch_size])).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    model.train()
    return correct / len(x)


def train_plain(
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    *,
    minutes: float,
    batch_size: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[tuple[float, float]]:
    """Train for ``minutes`` of wall clock (evaluation included); images are uint8
    ``[N, 3, 32, 32]``. Returns ``[(elapsed_s, held-out top-1), ...]``, one per epoch and
    a final one."""
    torch.manual_seed(seed)
    model = PlainResNet20(int(y_train.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    budget = minutes * 60.0
    curve: list[tuple[float, float]] = []
    start = time.monotonic()
    epoch = 0
    while time.monotonic() - start < budget:
        perm = torch.randperm(len(x_train))
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            frac = (time.monotonic() - start) / budget
            if frac >= 1:
                break
            up = 0.15
            scale = frac / up if frac < up else (1 - frac) / (1 - up)
            for group in opt.param_groups:
                group["lr"] = lr * max(scale, 0.0)
            idx = perm[i : i + batch_size]
            x = _normalise(_pad_crop_flip(x_train[idx]))
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epoch += 1
        acc = accuracy(model, x_val, y_val)
        curve.append((time.monotonic() - start, acc))
        log(f"plain loop: epoch {epoch}, {curve[-1][0]:.0f} s, held-out top-1 {acc:.4f}")
    return curve
