"""Evaluate a checkpoint on its task's validation data; print and save the metrics.

    python tools/eval.py RUN_DIR_OR_WEIGHTS [--out metrics.json] [--device cpu] [key=value ...]

Overrides apply to the config stored in the checkpoint (``data.val=DIR train.batch_size=64``).
Metrics are written as JSON to ``--out`` (default: ``eval.json`` beside the weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tasks import checkpoint, data, distributed
from tasks.cli import run_tool
from tasks.config import ConfigError
from tasks.engine import check_writable_dir
from tasks.loading import load_task
from tasks.logging_utils import jsonable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder or .safetensors weights")
    parser.add_argument("--out", help="JSON file for the metrics (default RUN_DIR/eval.json)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # key=value before and after options

    def body() -> int:
        path = checkpoint.find_weights(args.checkpoint)
        out = Path(args.out) if args.out else path.parent / "eval.json"
        if out.is_dir() or not out.parent.is_dir():  # found now, not after the evaluation
            raise FileNotFoundError(
                f"--out {str(out)!r}: expected a file path in an existing folder"
            )
        check_writable_dir(out.parent, "--out")  # before the evaluation, not after it
        print(f"evaluating {path}")
        state, metadata = checkpoint.read_weights(path)
        task = load_task(metadata, path, args.overrides)
        trained_classes = list(task.class_names)
        val_set = task.build_val_dataset()
        if list(task.class_names) != trained_classes:
            raise ConfigError(
                f"the validation data's classes {task.class_names} differ from the classes "
                f"{str(path)!r} was trained on {trained_classes}"
            )
        device = distributed.pick_device(args.device)
        model = task.build_model()
        checkpoint.load_into(model, state, path)
        model.to(device).eval()
        loader = data.val_loader(
            val_set,
            batch_size=task.val_batch_size(val_set),
            collate=task.collate,
            num_workers=task.cfg.train.num_workers,
        )
        with torch.no_grad():
            metrics = task.evaluate(model, loader, device)
        report = {"weights": str(path), **jsonable(metrics)}
        checkpoint.atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                print(f"{key}: {value:.4f}")
        print(f"wrote {out}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    raise SystemExit(main())
