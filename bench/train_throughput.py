"""Training images/s: the shared engine vs a plain eager PyTorch loop, same model and data.

Model: CIFAR ResNet-20 (``create_backbone("resnet20", num_classes=10)``), SGD Nesterov, random
32x32 images held in memory. The baseline is the tutorial loop: ``DataLoader(TensorDataset,
shuffle=True)``, contiguous NCHW, float32, ``loss.item()`` every step. The engine runs with its
fast settings (channels_last, on the CPU too: with torch 2.14 oneDNN's 16- and 32-channel
convolutions run up to 3x faster in NHWC; on the CPU ``keep_freed_memory``; bf16 autocast on
CUDA; losses read every ``log_every`` steps; index batching of in-memory tensors). Rounds
alternate baseline / engine so both see the same machine load, each round in a fresh process
(the allocator setting is process-wide); the first ``--warmup`` steps of every round are not
timed.

    python bench/train_throughput.py --quick          # ~1 minute on a free CPU core
    python bench/train_throughput.py --steps 50 --rounds 3
    python bench/train_throughput.py --steps 30 --rounds 3 --compile   # engine: train.compile=true
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional  # noqa: UP035 - OmegaConf structured configs need typing forms

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from backbones import create_backbone
from tasks.base import Task
from tasks.config import TrainConfig, load_config
from tasks.engine import Trainer
from tasks.hooks import Hook


@dataclass
class BenchModel:
    backbone: str = "resnet20"
    backbone_weights: Optional[str] = None  # noqa: UP045


@dataclass
class BenchData:
    images: int = 2048  # in-memory training images


@dataclass
class BenchConfig:
    model: BenchModel = field(default_factory=BenchModel)
    data: BenchData = field(default_factory=BenchData)
    train: TrainConfig = field(default_factory=TrainConfig)


class ResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_backbone("resnet20", num_classes=10)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.forward_logits(x)


def make_data(n: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,)))


class BenchTask(Task):
    name = "_bench_cifar"
    config_class = BenchConfig
    primary_metric = "accuracy"

    def build_datasets(self) -> tuple[TensorDataset, TensorDataset]:
        self.class_names = [str(k) for k in range(10)]
        return make_data(self.cfg.data.images), make_data(self.cfg.train.batch_size)

    def build_model(self) -> nn.Module:
        return ResNet20()

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return {"loss": F.cross_entropy(model(images), labels)}

    def evaluate(self, model: nn.Module, batches: Iterable[Any], device: torch.device) -> dict:
        return {"accuracy": 0.0}


class Timer(Hook):
    """Wall time between the end of step ``warmup`` and the end of the last step."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.seconds = warmup, steps, 0.0

    def after_step(self, step: int, losses: dict[str, Tensor]) -> None:
        if step in (self.warmup, self.steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.seconds = time.perf_counter() - self.start


def engine_round(args: argparse.Namespace, device: str) -> float:
    overrides = [
        f"train.device={device}", f"train.batch_size={args.batch_size}", "train.lr=0.05",
        f"train.max_steps={args.steps}", "train.epochs=1000", "train.log_every=50",
        "train.channels_last=true",
        f"train.amp={'bf16' if device == 'cuda' else 'none'}", "train.checkpoint_minutes=0",
        f"train.compile={str(args.compile).lower()}",
    ]  # fmt: skip
    timer = Timer(args.warmup, args.steps)
    task = BenchTask(load_config(BenchConfig, overrides=overrides))
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(task, run_dir, hooks=[timer], quiet=True).train()
    return args.batch_size * (args.steps - args.warmup) / timer.seconds


def baseline_round(args: argparse.Namespace, device: str) -> float:
    torch.manual_seed(0)
    model = ResNet20().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loader = DataLoader(make_data(2048), batch_size=args.batch_size, shuffle=True, drop_last=True)
    step, running, start = 0, 0.0, 0.0
    while step < args.steps:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
            if step == args.warmup:
                start = time.perf_counter()
            if step == args.steps:
                break
    return args.batch_size * (args.steps - args.warmup) / (time.perf_counter() - start)


def run_arm(arm: str) -> float:
    """One round of ``arm`` in a fresh Python process, so that process-wide settings (the
    engine's allocator tuning, compiled code, oneDNN caches) never leak into the other arm."""
    cmd = [sys.executable, __file__, "--arm", arm, *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{arm} round failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/engine pairs")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument("--compile", action="store_true", help="engine with train.compile=true")
    parser.add_argument("--quick", action="store_true", help="--steps 8 --warmup 2 --rounds 1")
    parser.add_argument("--arm", choices=["baseline", "engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = 8, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.arm:  # a child process: one round, images/s on the last line
        one_round = baseline_round if args.arm == "baseline" else engine_round
        print(one_round(args, device))
        return
    base, engine = [], []
    for r in range(args.rounds):
        base.append(run_arm("baseline"))
        engine.append(run_arm("engine"))
        print(f"round {r + 1}: baseline {base[-1]:.1f} img/s, engine {engine[-1]:.1f} img/s")
    b, e = statistics.median(base), statistics.median(engine)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(
        f"{name}, batch {args.batch_size}, {args.steps - args.warmup} timed steps x {args.rounds}"
    )
    print(f"median: baseline {b:.1f} img/s, engine {e:.1f} img/s, ratio {e / b:.2f}x")


if __name__ == "__main__":
    main()
