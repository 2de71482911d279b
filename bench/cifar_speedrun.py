"""CIFAR-10 speed run: resvision's recipe vs the plain loop, same data, same split, same clock.

    python bench/cifar_speedrun.py [--tar ../shared/data/cifar10-train.tar.gz]
                                   [--data /tmp/cifar10] [--minutes 10]

1. Extracts the ImageFolder tarball (train/<class>/*.jpg, 50,000 images) to ``--data``.
2. Holds out 5,000 training images as validation: ``stratified_split(labels, 0.1, seed 0)``,
   the function the classify task itself uses, so both arms see the SAME split.
3. resvision arm: ``tools/train.py --task classify --config configs/classify/cifar10.yaml
   train.max_minutes=M`` in a subprocess (what a user runs).
4. Plain arm: ``bench/plain_loop.py`` (ResNet-20, SGD, one-cycle over the same M minutes).
5. Prints both held-out accuracies and the error ratio; saves the accuracy-vs-time curves
   as ``docs/cifar_speedrun.png`` and the numbers as ``bench/results/cifar_speedrun.json``.
The arms run one after the other, never in parallel. Targets: resvision error <= half the
plain loop's, and accuracy >= 90%.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import time
from pathlib import Path

import torch

from tasks.classify.data import load_image_folder, stratified_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from plain_loop import train_plain  # noqa: E402
from train_tool import eval_curve, train_tool  # noqa: E402 - bench/ is the script's folder


def extract(tar: Path, dest: Path) -> Path:
    root = dest / "train"
    if not root.is_dir():
        print(f"extracting {tar} -> {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as archive:
            archive.extractall(dest, filter="data")
    return root


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    from tasks.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        t, acc = zip(*curve, strict=True) if curve else ((), ())
        ax.plot([s / 60 for s in t], [100 * a for a in acc], marker="o", label=name)
    ax.set_xlabel("training wall-clock time (minutes)")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tar", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-train.tar.gz"
    )
    ap.add_argument("--data", type=Path, default=Path("/tmp/cifar10"))
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per arm")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    root = extract(args.tar, args.data)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.out / f"cifar_speedrun-{stamp}"
    split = [f"data.train={root}", "data.val_fraction=0.1", "data.split_seed=0"]
    final = train_tool(
        "classify", "cifar10.yaml", run_dir, [*split, f"train.max_minutes={args.minutes}"]
    )
    acc_res, curve_res = float(final["top1"]), eval_curve(run_dir, "top1")

    full = load_image_folder(root, 32, cache_dir="~/.cache/resvision")  # decoded by the run
    train_idx, val_idx = stratified_split(full.labels, 0.1, 0)
    print(f"plain loop: {len(train_idx)} train / {len(val_idx)} held-out images", flush=True)
    curve_plain = train_plain(
        full.images[train_idx], full.labels[train_idx],
        full.images[val_idx], full.labels[val_idx], minutes=args.minutes,
    )  # fmt: skip
    acc_plain = curve_plain[-1][1]

    ratio = (1 - acc_res) / max(1 - acc_plain, 1e-9)
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\nheld-out top-1 ({len(val_idx)} images, {args.minutes:g} min each, {hardware}):")
    print(f"  resvision  {acc_res:.4f}  (error {1 - acc_res:.4f})")
    print(f"  plain loop {acc_plain:.4f}  (error {1 - acc_plain:.4f})")
    print(f"  error ratio resvision / plain = {ratio:.3f}  (target <= 0.5; accuracy target 0.90)")

    title = (
        f"CIFAR-10, 5k held-out, {args.minutes:g} min per arm, {hardware}, "
        f"{time.strftime('%Y-%m-%d')}"
        "\n(python bench/cifar_speedrun.py)"
    )
    plot({"resvision (cifar10.yaml)": curve_res, "plain loop (ResNet-20)": curve_plain},
         ROOT / "docs" / "cifar_speedrun.png", title)  # fmt: skip
    result = {
        "resvision_top1": acc_res, "plain_top1": acc_plain, "error_ratio": ratio,
        "minutes": args.minutes, "hardware": hardware, "date": stamp,
        "curves": {"resvision": curve_res, "plain": curve_plain},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cifar_speedrun.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
