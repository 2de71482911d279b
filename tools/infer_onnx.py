"""Run an exported ONNX model on image files and draw the results as tools/predict.py does.

    python tools/infer_onnx.py model.onnx IMAGE_OR_FOLDER [...] [--out DIR]
        [--provider auto|tensorrt|cuda|cpu] [--score-thresh 0.3] [--top-k 5]

The provider is chosen by availability (TensorRT, then CUDA, then CPU) unless given; the
one that really runs is printed. Everything about the model comes from its metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks import TASKS
from tasks.detect.draw import draw_detections, save_image
from tasks.images import list_images
from tasks.inference import PROVIDER_CHOICES, OnnxModel, read_image
from tasks.segment import draw as seg_draw


def classify_result(model: OnnxModel, path: Path, res: dict, top_k: int) -> dict[str, Any]:
    probs = res["probs"]
    order = np.argsort(-probs)[: min(top_k, len(probs))]
    top = [{"class": model.class_names[i], "index": int(i), "prob": float(probs[i])} for i in order]
    print(f"{path}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top))
    return {"image": str(path), "top": top}


def detect_result(
    model: OnnxModel, path: Path, res: dict, out: Path | None, thresh: float
) -> dict[str, Any]:
    pred = {k: torch.from_numpy(np.asarray(v)) for k, v in res.items()}
    if out is not None:
        image = torch.from_numpy(read_image(path)).permute(2, 0, 1)
        drawn = draw_detections(image, pred, model.class_names, score_thresh=thresh)
        save_image(drawn, out / f"{path.stem}.png")
    objects = [
        dict(
            box=[round(float(v), 2) for v in b], label=model.class_names[int(c) - 1], score=float(s)
        )
        for b, c, s in zip(res["boxes"], res["labels"], res["scores"], strict=False)
    ]
    print(f"{path}: {sum(o['score'] >= thresh for o in objects)} detections >= {thresh}")
    return dict(image=str(path), detections=objects)


def segment_result(model: OnnxModel, path: Path, res: dict, out: Path | None) -> dict[str, Any]:
    image = read_image(path) if out is not None else None
    colours = seg_draw.palette(len(model.class_names))
    pred = np.asarray(res["labels"])
    return seg_draw.report_prediction(path, pred, model.class_names, colours, out, image)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an .onnx file written by tools/export_onnx.py")
    p.add_argument("images", nargs="+", help="image files or folders of them")
    p.add_argument("--out", help="folder for drawings and predictions.json")
    p.add_argument("--provider", default="auto", choices=sorted(PROVIDER_CHOICES))
    p.add_argument(
        "--score-thresh", type=float, default=0.3, help="detections drawn from this score"
    )
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image")
    args = p.parse_args(argv)
    try:
        out = Path(args.out) if args.out else None
        model = OnnxModel(args.model, provider=args.provider)
        named = out is not None and TASKS.get(model.task).writes_image_files
        images = list_images(args.images, unique_stems=named)
        print(f"{model.path.name}: task {model.task}, provider {model.provider}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        results = []
        for path in images:
            try:
                res = model(path)[0]
            except ValueError as err:  # a size or layout the graph cannot take: name the image
                raise ValueError(err if str(path) in str(err) else f"{path}: {err}") from None
            if model.task == "classify":
                results.append(classify_result(model, path, res, args.top_k))
            elif model.task == "detect":
                results.append(detect_result(model, path, res, out, args.score_thresh))
            else:
                results.append(segment_result(model, path, res, out))
    except (ValueError, OSError) as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out is not None:
        (out / "predictions.json").write_text(
            json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
