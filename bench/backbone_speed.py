"""Forward latency of our resnet50 against torchvision's, same weights, same process.

    python bench/backbone_speed.py [--repeats 7] [--device cpu|cuda] [--threads N]

For each configuration (batch 1 and 8 at 224x224; eager NCHW and channels_last) the two
models run in alternation (ours, theirs, ours, ...) so machine load drifts hit both alike.
Prints the median (p50) milliseconds per forward and ratio = torchvision / ours
(>= 0.98 means we are at most 2% slower).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchvision

from backbones import create_backbone


def timed(fn, x: torch.Tensor, device: str) -> float:
    """Seconds for one forward (synchronised on CUDA)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed forwards per model/config")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = torchvision.models.resnet50().eval().to(args.device)
    ours = create_backbone("resnet50", num_classes=1000).eval().to(args.device)
    ours.load_state_dict(ref.state_dict())
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(
        f"# {args.device} ({name}), torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, {args.repeats} interleaved repeats, inference_mode"
    )
    print(f"{'batch':>5} {'layout':<14} {'ours p50 ms':>12} {'tv p50 ms':>10} {'tv/ours':>8}")
    for layout in (torch.contiguous_format, torch.channels_last):
        ref.to(memory_format=layout)
        ours.to(memory_format=layout)
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224, device=args.device).to(memory_format=layout)
            times: dict[str, list[float]] = {"ours": [], "tv": []}
            with torch.inference_mode():
                diff = (ours.forward_logits(x) - ref(x)).abs().max().item()  # also a warm-up
                for _ in range(args.repeats):
                    times["ours"].append(timed(ours.forward_logits, x, args.device))
                    times["tv"].append(timed(ref, x, args.device))
            p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            label = "eager" if layout is torch.contiguous_format else "channels_last"
            print(
                f"{batch:>5} {label:<14} {p50['ours']:>12.2f} {p50['tv']:>10.2f} "
                f"{p50['tv'] / p50['ours']:>8.3f}  (max |diff| {diff:.1e})"
            )


if __name__ == "__main__":
    main()
