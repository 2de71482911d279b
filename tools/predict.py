"""Run a trained model on image files (the task prints and, with --out, draws its results).

python tools/predict.py RUN_DIR_OR_WEIGHTS IMAGE_OR_FOLDER [...] [--out DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks import distributed, load_model
from tasks.cli import run_tool
from tasks.engine import check_writable_dir
from tasks.images import list_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder or .safetensors weights")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--out", help="folder for the task's output files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    args = parser.parse_args(argv)

    def body() -> int:
        out_dir = Path(args.out) if args.out else None
        if out_dir is not None:  # a file, under a file, read-only: before the model loads
            check_writable_dir(out_dir)
        device = distributed.pick_device(args.device)
        model, task = load_model(args.checkpoint, device)
        named = out_dir is not None and task.writes_image_files
        images = list_images(args.images, unique_stems=named)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        task.predict(model, images, out_dir, device)
        return 0

    return run_tool(body)


if __name__ == "__main__":
    raise SystemExit(main())
