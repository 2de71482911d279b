"""Inference speed: our Faster R-CNN (ResNet-50 + FPN) vs torchvision's fasterrcnn_resnet50_fpn.

    python bench/detect_speed.py [--size 512] [--images 2] [--rounds 5] [--threads 0]

Both models are built with random weights in the same process, get the same images at the
same input size (``min_size = max_size = --size``) and are timed interleaved (ours, theirs,
ours, ...) in eager mode under ``torch.inference_mode``, so machine load hits both alike.
Prints the median seconds per batch and the ratio torchvision / ours (>= 1.0: we are not
slower), plus our FCOS head on the same backbone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from backbones import create_backbone
from heads.detection import Detector, FasterRCNNHead, FCOSDetectionHead, torchvision_key_map


def _time(model: torch.nn.Module, images: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(images)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="input side, pixels")
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = dict(min_size=args.size, max_size=args.size)
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **size).eval()
    backbone = create_backbone("resnet50", norm_layer="frozen_batchnorm", frozen_stages=1)
    ours = Detector(backbone, FasterRCNNHead(backbone.feature_info, 91), **size).eval()
    ours.load_state_dict(torchvision_key_map(theirs.state_dict()))
    fcos_backbone = create_backbone(
        "resnet50", out_indices=(2, 3, 4), norm_layer="frozen_batchnorm"
    )
    fcos = Detector(fcos_backbone, FCOSDetectionHead(fcos_backbone.feature_info, 91), **size).eval()
    images = list(torch.rand(args.images, 3, args.size, args.size))
    models = {"ours": ours, "torchvision": theirs, "ours_fcos": fcos}
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():  # warm-up: allocator, oneDNN kernel selection
        _time(model, images)
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(_time(model, images))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.images} x 3 x {args.size} x {args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved rounds (s/batch):")  # fmt: skip
    for name, seconds in median.items():
        print(f"  {name:<12} {seconds:.3f}")
    for name in ("ours", "ours_fcos"):
        print(f"ratio torchvision / {name}: {median['torchvision'] / median[name]:.3f}")


if __name__ == "__main__":
    main()
