"""The residual lab: why ``y = F(x) + x`` trains where ``y = F(x)`` does not, measured.

    python tools/residual_lab.py degradation [key=value ...] [--budget-minutes N] [--out DIR]
    python tools/residual_lab.py gradients RUN_DIR_OR_BACKBONE ... [--out DIR]
    python tools/residual_lab.py cam RUN_DIR IMAGE ... [--out DIR]

degradation: plain-20/56 and ResNet-20/56 with one recipe, N/4 minutes each (synthetic data
unless ``data.train=DIR``); writes degradation.png/.json and prints a verdict.
gradients: per-block gradient RMS through depth for a backbone and its plain/residual twin at
initialisation (or a run's model, trained and at init), and the shortcut/branch split of
``dL/dx``; writes gradients.png/.json. cam: Grad-CAM overlays for a classification run.
See docs/residual.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.cli import run_tool
from tasks.config import ConfigError
from tasks.logging_utils import jsonable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    deg = sub.add_parser("degradation", help="plain vs residual training error (He et al. Fig. 6)")
    deg.add_argument("--budget-minutes", type=float, default=20.0, help="total, split over 4 nets")
    deg.add_argument("--out", default="runs/residual-degradation", help="output folder")
    deg.add_argument("--log-every", type=int, default=10, help="steps between curve points")
    deg.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.train=DIR")
    grad = sub.add_parser("gradients", help="gradient norms through depth, shortcut vs branch")
    grad.add_argument("sources", nargs="+", metavar="RUN_DIR_OR_BACKBONE")
    grad.add_argument("--out", default="runs/residual-gradients", help="output folder")
    grad.add_argument("--batch", type=int, default=8, help="images in the probe batch")
    grad.add_argument("--size", type=int, default=32, help="probe image size (backbone names)")
    grad.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    cam = sub.add_parser("cam", help="Grad-CAM overlays for a classification run")
    cam.add_argument("run_dir", metavar="RUN_DIR")
    cam.add_argument("images", nargs="+", metavar="IMAGE")
    cam.add_argument("--out", default=None, help="output folder (default RUN_DIR/gradcam)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------- degradation
def degradation(args: argparse.Namespace) -> int:
    from tasks.residual.degradation import curves_json, run_degradation, verdict
    from tasks.residual.plots import plot_degradation

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("data.train=")), None)
    start = time.time()
    runs, num_classes = run_degradation(
        out, budget_minutes=args.budget_minutes, overrides=args.overrides, log_every=args.log_every
    )
    result = verdict(runs, num_classes)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    title = (
        f"degradation, {data or 'synthetic data'}, {args.budget_minutes / 4:g} min per net on "
        f"{device}, {time.strftime('%Y-%m-%d')}; thin: training error, bold: validation error"
    )
    png = plot_degradation(runs, out / "degradation.png", title)
    info = dict(
        command="python tools/residual_lab.py degradation " + " ".join(args.overrides)
        + f" --budget-minutes {args.budget_minutes:g} --out {args.out}",
        data=data or "synthetic", budget_minutes=args.budget_minutes, device=device,
        date=time.strftime("%Y-%m-%d %H:%M"), wall_s=round(time.time() - start, 1),
        num_classes=num_classes,
    )  # fmt: skip
    (out / "degradation.json").write_text(
        json.dumps(jsonable(curves_json(runs, result, **info)), indent=2)
    )
    print("\n".join(result["text"]))
    print(f"wrote {png} and {out / 'degradation.json'}")
    return 0


# ------------------------------------------------------------------------------ gradients
def twin_name(name: str) -> str | None:
    """``resnet56`` <-> ``resnet56_plain`` when both are registered, else None."""
    from backbones import list_backbones

    other = name[: -len("_plain")] if name.endswith("_plain") else f"{name}_plain"
    return other if other in list_backbones() else None


def _backbone_curves(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from backbones import create_backbone
    from tasks.residual.gradients import ProbeClassifier, cross_entropy_loss, measure, random_batch

    x, labels = random_batch(args.batch, args.size, seed=args.seed)
    curves = {}
    for net in filter(None, (name, twin_name(name))):
        torch.manual_seed(args.seed)
        model = ProbeClassifier(create_backbone(net), seed=args.seed)
        curves[f"{net} (init)"] = measure(model, cross_entropy_loss(x, labels))
    return curves


def _probe_batch(task: Any, n: int, seed: int) -> Any:
    """The first ``n`` validation images of the run's data; random pixels and labels when
    the data is not there (printed)."""
    from torch.utils.data import DataLoader

    try:
        _, val = task.build_datasets()
        return next(iter(DataLoader(val, batch_size=n, collate_fn=task.collate)))
    except (FileNotFoundError, ValueError) as err:
        print(f"note: the run's data is not available ({err}); probing with random pixels")
        gen = torch.Generator().manual_seed(seed)
        size = task.cfg.data.image_size
        images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
        return images, torch.randint(0, len(task.class_names), (n,), generator=gen)


def _run_curves(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from tasks import load_model
    from tasks.residual.gradients import measure

    model, task = load_model(run_dir)
    task.progress = 1.0  # probe at the end-of-training image size (data.progressive)
    batch = _probe_batch(task, args.batch, args.seed)
    device = torch.device("cpu")

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        # train_step augments (crop, flip, mixup) and runs dropout / drop-path from the global
        # RNGs: reseed so every curve, trained and init, sees the same views of the batch and
        # a rerun with the same --seed gives the same numbers
        torch.manual_seed(args.seed)
        np.random.seed(args.seed % 2**32)
        return task.train_step(m, batch, device)["loss"]

    name = task.cfg.model.backbone
    curves = {f"{name} (trained, {run_dir.name})": measure(model, loss_fn)}
    for net in filter(None, (name, twin_name(name))):
        torch.manual_seed(args.seed)
        task.cfg.model = replace(task.cfg.model, backbone=net)
        curves[f"{net} (init, {run_dir.name} recipe)"] = measure(task.build_model(), loss_fn)
    return curves


def gradients(args: argparse.Namespace) -> int:
    from backbones import list_backbones
    from tasks.residual.plots import plot_gradients

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, Any] = {}
    for source in args.sources:
        if Path(source).is_dir():
            curves.update(_run_curves(Path(source), args))
        elif source in list_backbones():
            curves.update(_backbone_curves(source, args))
        else:
            raise ConfigError(
                f"{source!r} is neither a run folder nor a registered backbone "
                f"(expected RUN_DIR or a name such as resnet56; see backbones.list_backbones())"
            )
    report = {}
    for label, stats in curves.items():
        spread = stats[0].grad_x_rms / max(stats[-1].grad_x_rms, 1e-30)
        report[label] = {"first_over_last": spread, "blocks": [s.as_dict() for s in stats]}
        print(
            f"{label}: {len(stats)} blocks, RMS dL/dx first block / last block = {spread:.3g} "
            f"(log10 {math.log10(max(spread, 1e-30)):+.2f})"
        )
    title = (
        f"gradients: {', '.join(args.sources)}, batch {args.batch}, training-mode BN, "
        f"seed {args.seed}, {time.strftime('%Y-%m-%d')}"
    )
    png = plot_gradients(curves, out / "gradients.png", title)
    info = {
        "command": "python tools/residual_lab.py gradients " + " ".join(args.sources),
        "batch": args.batch,
        "size": args.size,
        "seed": args.seed,
        "models": report,
    }
    (out / "gradients.json").write_text(json.dumps(jsonable(info), indent=2))
    print(f"wrote {png} and {out / 'gradients.json'}")
    return 0


# ------------------------------------------------------------------------------------ cam
def cam(args: argparse.Namespace) -> int:
    from tasks import load_model
    from tasks.residual.cam import write_overlays

    model, task = load_model(args.run_dir)
    if task.name != "classify":
        raise ConfigError(f"cam: {args.run_dir!r} is a {task.name!r} run; expected classify")
    out = Path(args.out) if args.out else Path(args.run_dir) / "gradcam"
    results = write_overlays(model, task, args.images, out)
    for r in results:
        print(f"{r['image']}: {r['class']} {r['prob']:.3f} -> {r['overlay']}")
    (out / "gradcam.json").write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {"degradation": degradation, "gradients": gradients, "cam": cam}[args.command]

    def body() -> int:
        try:
            return command(args)
        except ValueError as err:  # our own input checks (e.g. a timm backbone)
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(str(err)) from None

    return run_tool(body)


if __name__ == "__main__":
    raise SystemExit(main())
