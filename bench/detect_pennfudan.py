"""Penn-Fudan, same time budget: our detection recipe vs a plain torchvision Faster R-CNN loop.

    python bench/detect_pennfudan.py [--minutes 20] [--src ../shared/data/pennfudan.tar.gz]

Both train from scratch on the same 80/20 split (``tools/convert.py pennfudan``, seed 0) for
``--minutes`` of wall-clock time each, one after the other, and are scored with the same
COCO evaluation (``tasks.detect.metrics``). Ours: ``tools/train.py --task detect --config
configs/detect/pennfudan.yaml``. Baseline: torchvision's tutorial recipe,
``FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=2)``
with SGD (lr 0.005, momentum 0.9, weight decay 5e-4), batch 2, horizontal flips, default
800-px input. Prints both AP values and their ratio (target: ours / baseline >= 2).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from train_tool import train_tool  # noqa: E402 - bench/ is the script's folder

from tasks.detect.augment import AugmentConfig, build_augment
from tasks.detect.dataset import DetectionDataset, collate, load_detection_folder
from tasks.detect.metrics import coco_evaluate

ROOT = Path(__file__).resolve().parents[1]


def train_baseline(data: Path, minutes: float) -> float:
    torch.manual_seed(0)
    records, names, _ = load_detection_folder(
        data / "train", field="train", class_names=None, fix=False
    )
    val, _, _ = load_detection_folder(data / "val", field="val", class_names=names, fix=False)
    train_set = DetectionDataset(records, build_augment(AugmentConfig(hflip=0.5)))
    model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=5e-4)
    deadline, steps = time.monotonic() + minutes * 60, 0
    while time.monotonic() < deadline:
        loader = DataLoader(train_set, batch_size=2, shuffle=True, collate_fn=collate)
        for images, targets in loader:
            if time.monotonic() >= deadline:
                break
            model.train()
            images = [img.float() / 255 for img in images]
            targets = [dict(boxes=t["boxes"], labels=t["labels"]) for t in targets]
            loss = sum(model(images, targets).values())
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"baseline loss became {loss.item()} at step {steps}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    print(f"baseline: {steps} steps")
    model.eval()
    gts, dets = [], []
    with torch.no_grad():
        # one image at a time, as DetectTask.detect runs images of different sizes (padding to
        # a batch's largest image changes an image's detections)
        for images, targets in DataLoader(DetectionDataset(val), batch_size=1, collate_fn=collate):
            preds = model([img.float() / 255 for img in images])
            for img, t, p in zip(images, targets, preds, strict=True):
                h, w = img.shape[-2:]
                arrays = {k: t[k].numpy() for k in ("boxes", "labels", "iscrowd")}
                gts.append(dict(image_id=int(t["image_id"]), width=w, height=h, **arrays))
                dets.append(
                    dict(image_id=int(t["image_id"]), **{k: v.numpy() for k, v in p.items()})
                )
    return coco_evaluate(gts, dets, names)[0]["AP"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    parser.add_argument(
        "--src", type=Path, default=ROOT.parent / "shared" / "data" / "pennfudan.tar.gz"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detect_pennfudan")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pennfudan"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tools" / "convert.py"),
                "pennfudan",
                str(args.src),
                str(data),
            ],
            check=True,
        )
        split = [f"data.train={data / 'train'}", f"data.val={data / 'val'}"]
        final = train_tool(
            "detect", "pennfudan.yaml", args.out, [*split, f"train.max_minutes={args.minutes}"]
        )
        ours = float(final["AP"])
        base = train_baseline(data, args.minutes)
    ratio = ours / base if base > 0 else float("inf")
    print(f"Penn-Fudan COCO AP after {args.minutes:g} min each: ours {ours:.4f}, "
          f"torchvision baseline {base:.4f}, ratio {ratio:.2f} (target >= 2)")  # fmt: skip


if __name__ == "__main__":
    main()
