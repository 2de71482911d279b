"""Inference speed: our DeepLabV3-ResNet50 vs torchvision's ``deeplabv3_resnet50``, eager.

Same weights (ours loads torchvision's state dict), same input, same process, timed
interleaved (A, B, A, B, ...) so load changes hit both alike. Reports median milliseconds per
forward and the ratio torchvision / ours (>= 1.0 means we are at least as fast).

    python bench/segment_speed.py [--size 256] [--batch 1] [--iters 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.segmentation import deeplabv3_resnet50

from backbones import create_backbone
from heads.segmentation import SEG_HEADS, SegmentationModel, from_torchvision_state_dict


def build_pair(num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, torchvision), identical weights, eval mode."""
    ref = deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=False, num_classes=num_classes
    )
    backbone = create_backbone("resnet50", output_stride=8)
    head = SEG_HEADS.create(
        "deeplabv3", feature_info=backbone.feature_info, num_classes=num_classes
    )
    ours = SegmentationModel(backbone, head)
    ours.load_state_dict(from_torchvision_state_dict(ref.state_dict()))
    return ours.eval(), ref.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="input side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10, help="timed forwards per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    ours, ref = (m.to(device) for m in build_pair(21))
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    runs = {"ours": lambda: ours(x).preds, "torchvision": lambda: ref(x)["out"]}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        diff = (runs["ours"]() - runs["torchvision"]()).abs().max().item()  # also a warm-up
        for _ in range(args.iters):
            for name, fn in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(
        f"device={device} input={args.batch}x3x{args.size}x{args.size} iters={args.iters} "
        f"threads={torch.get_num_threads()} max|diff|={diff:.2e}"
    )
    for name, ms in med.items():
        print(f"{name:12s} {ms:9.1f} ms / forward (median)")
    print(f"ratio torchvision/ours = {med['torchvision'] / med['ours']:.3f} (target >= 1.0)")


if __name__ == "__main__":
    main()
