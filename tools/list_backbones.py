"""Print the registered backbones: parameters, GFLOPs and the feature levels.

    python tools/list_backbones.py            # all
    python tools/list_backbones.py 'resnet*'  # shell wildcard
    python tools/list_backbones.py --size 32 'resnet2*'

Models are built and run on the ``meta`` device: shapes and FLOPs are exact but no memory
is allocated and nothing is computed. Parameters include a classifier for 1000 classes
(4-stage ImageNet nets) or 10 classes (3-stage CIFAR nets), as the papers count them;
GFLOPs are those of the backbone alone. They are
``torch.utils.flop_counter.FlopCounterMode`` totals (2 FLOPs per multiply-add; halve them
for the "GMACs" that torchvision's docs call GFLOPS) for one image of ``size x size``.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from backbones import create_backbone, list_backbones


def describe(name: str, size: int) -> tuple[str, str, str, str]:
    """(name, params in M, GFLOPs, ``name:channels/stride`` for each level)."""
    with torch.device("meta"):
        model = create_backbone(name, out_indices=None).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, model.in_chans, size, size))
    classes = 10 if len(model.stage_names) == 3 else 1000
    params = sum(p.numel() for p in model.parameters()) + (model.num_features + 1) * classes
    levels = " ".join(f"{f.name}:{f.channels}/{f.stride}" for f in model.feature_info)
    return name, f"{params / 1e6:.2f}", f"{counter.get_total_flops() / 1e9:.2f}", levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'resnet*'")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    args = parser.parse_args()
    names = list_backbones(args.pattern)
    if not names:
        raise SystemExit(f"no backbone matches {args.pattern!r}; try 'resnet*' or '*'")
    header = ("name", "params(M)", f"GFLOPs@{args.size}", "levels name:channels/stride")
    rows = [header] + [describe(n, args.size) for n in names]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


if __name__ == "__main__":
    main()
