"""Penn-Fudan person segmentation: resvision's segment task vs a plain smp loop, same budget.

Both arms train from scratch on the same 80/20 split (``tools/convert.py pennfudan``, seed 0)
for ``--minutes`` of wall-clock training each, and are scored the same way: mIoU (person,
background) over the whole held-out images at full resolution, one confusion matrix.

- resvision: ``tools/train.py --task segment --config configs/segment/pennfudan.yaml``
  (DeepLabV3+ on ResNet-18 at 3/8 width, output stride 32, 64-channel decoder, trained on
  images shrunk to 384 px held in memory and scored at full resolution; aux loss, Dice,
  scale/crop/flip/colour augmentation, flip and two-scale TTA).
- plain:     ``smp.DeepLabV3Plus("resnet18", encoder_weights=None)``, random 256 crops +
             flip, cross-entropy, AdamW lr 1e-3 constant, batch 8 (what a user writes first).

    python bench/segment_pennfudan.py [--minutes 20] [--data /tmp/pennfudan]
Needs ``pip install -e '.[bench]'`` (segmentation-models-pytorch). Target: ratio >= 1.2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from train_tool import train_tool  # noqa: E402 - bench/ is the script's folder

from tasks.segment.augment import build_transform
from tasks.segment.data import SegmentationDataset, open_source, pad_collate
from tasks.segment.infer import predict_logits
from tasks.segment.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parents[1]
TARBALL = ROOT.parent / "shared" / "data" / "pennfudan.tar.gz"  # ../shared/data from the repo
IGNORE = 255


def convert(data: Path) -> None:
    if not (data / "val" / "annotations.json").is_file():
        cmd = [
            sys.executable,
            str(ROOT / "tools" / "convert.py"),
            "pennfudan",
            str(TARBALL),
            str(data),
        ]
        subprocess.run(cmd, check=True)


def dataset(path: Path, train: bool) -> SegmentationDataset:
    transform = build_transform(
        train=train, ignore_index=IGNORE, crop_size=256, scale=(1.0, 1.0), color_jitter=0.0
    )
    source = open_source(str(path), "train", ignore_index=IGNORE)
    return SegmentationDataset(source, num_classes=2, ignore_index=IGNORE, transform=transform)


def run_plain(data: Path, minutes: float, device: torch.device) -> float:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    collate = lambda s: pad_collate(s, IGNORE)  # noqa: E731
    loader = DataLoader(
        dataset(data / "train", True),
        batch_size=8,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
    )
    deadline, steps = time.monotonic() + 60 * minutes, 0
    while time.monotonic() < deadline:
        for images, masks in loader:
            logits = model(images.to(device))
            loss = F.cross_entropy(logits, masks.to(device), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if time.monotonic() >= deadline:
                break
    print(f"plain: {steps} steps in {minutes} min", flush=True)
    model.eval()
    cm = ConfusionMatrix(2, IGNORE)
    val = DataLoader(dataset(data / "val", False), batch_size=1, collate_fn=collate)
    for images, masks in val:  # whole images, padded to a multiple of 16 as smp requires
        logits = predict_logits(lambda x: _Out(model(x)), images.to(device), multiple=16)
        cm.update(logits.argmax(1).cpu(), masks)
    return cm.compute()["mIoU"]


class _Out:
    """Adapts a plain logits tensor to the ``.preds`` that ``predict_logits`` reads."""

    def __init__(self, preds: torch.Tensor) -> None:
        self.preds = preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per arm")
    parser.add_argument("--data", type=Path, default=Path("/tmp/pennfudan"), help="converted data")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "segment_pennfudan"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    convert(args.data)
    split = [f"data.train={args.data / 'train'}", f"data.val={args.data / 'val'}"]
    final = train_tool(
        "segment",
        "pennfudan.yaml",
        args.out,
        # one evaluation, at the deadline: the budget is wall-clock and evaluations spend it
        [*split, f"train.max_minutes={args.minutes}", "train.eval_every=100000"],
    )
    ours = float(final["mIoU"])
    plain = run_plain(args.data, args.minutes, device)
    print(f"budget {args.minutes} min per arm on {device}")
    print(f"resvision mIoU {ours:.4f}")
    print(f"plain smp mIoU {plain:.4f}")
    print(f"ratio {ours / max(plain, 1e-9):.3f} (target >= 1.2)")


if __name__ == "__main__":
    main()
