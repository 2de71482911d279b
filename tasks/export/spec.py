"""Which export module each task gets, and what its graph expects and returns.

``build_export(model, task)`` is the one entry point: it wraps a trained model (from
``tasks.load_model``) in the task's export module and describes its inputs, outputs and
preprocessing for the ONNX metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tasks.base import Task
from tasks.export.detection import FasterRCNNExport
from tasks.export.fcos import FCOSExport
from tasks.export.wrappers import ClassifyExport, SegmentExport

EXPORTABLE = ("classify", "segment", "detect")
DETECTION_EXPORTS = {"faster_rcnn": FasterRCNNExport, "fcos": FCOSExport}  # by model.head


@dataclass
class ExportSpec:
    """module:       ``images [B, 3, H, W] -> tuple of tensors`` named ``outputs``.
    outputs:      output names, in order.
    output_axes:  per output, {axis: name} of its dynamic axes (with ``--dynamic``).
    sample_hw:    (H, W) of the tracing input and the default parity size.
    preprocess:   what the graph does to the pixels (goes into the metadata as JSON).
    """

    module: nn.Module
    outputs: tuple[str, ...]
    output_axes: dict[str, dict[int, str]]
    sample_hw: tuple[int, int]
    preprocess: dict[str, Any] = field(default_factory=dict)


def build_export(model: nn.Module, task: Task) -> ExportSpec:
    """The export module of ``model`` for ``task`` (eval mode). Raises NotImplementedError
    naming the task or head when there is no exportable path."""
    model = model.eval()
    cfg = task.cfg
    if task.name == "classify":
        size = cfg.data.image_size
        return ExportSpec(
            ClassifyExport(model, size, cfg.data.tta_flip, cfg.data.tta_translate).eval(),
            ("logits", "probs"),
            {"logits": {0: "batch"}, "probs": {0: "batch"}},
            (size, size),
            {"resize": "square", "size": size, "mean": list(cfg.model.mean),
             "std": list(cfg.model.std), "units": "0..255"},
        )  # fmt: skip
    if task.name == "segment":
        from tasks.segment.augment import MEAN, STD

        multiple = max(f.stride for f in model.backbone.feature_info)
        size = cfg.data.synthetic_size if cfg.data.train is None else 256
        if cfg.data.max_size:  # check parity above max_size, where the graph shrinks
            size = cfg.data.max_size * 5 // 4
        if cfg.data.eval_window:
            print(f"note: data.eval_window={cfg.data.eval_window} is not exported (one pass)")
        return ExportSpec(
            SegmentExport(
                model, MEAN, STD, multiple, cfg.data.eval_flip, cfg.data.max_size,
                cfg.data.eval_scales,
            ).eval(),
            ("logits", "labels"),
            {"logits": {0: "batch", 2: "height", 3: "width"},
             "labels": {0: "batch", 1: "height", 2: "width"}},
            (size, size),
            {"resize": "longest_side" if cfg.data.max_size else "none",
             "max_size": cfg.data.max_size, "scales": list(cfg.data.eval_scales),
             "pad_multiple": multiple, "mean": list(MEAN),
             "std": list(STD), "units": "0..1"},
        )  # fmt: skip
    if task.name == "detect":
        m = cfg.model
        if m.head not in DETECTION_EXPORTS:
            raise NotImplementedError(
                f"ONNX export of detection head model.head={m.head!r} is not implemented; "
                f"expected one of {', '.join(DETECTION_EXPORTS)}"
            )
        return ExportSpec(
            DETECTION_EXPORTS[m.head](model).eval(),
            ("boxes", "scores", "labels", "num_detections"),
            {"boxes": {0: "batch"}, "scores": {0: "batch"}, "labels": {0: "batch"},
             "num_detections": {0: "batch"}},
            (m.min_size, m.min_size),
            {"resize": "short_side", "min_size": m.min_size, "max_size": m.max_size,
             "pad_multiple": 32, "units": "0..1", "mean": list(model.transform.image_mean),
             "std": list(model.transform.image_std), "detections_per_img": m.detections_per_img,
             "boxes": "x1y1x2y2 in input pixels", "labels": "1-based: class_names[label - 1]"},
        )  # fmt: skip
    raise NotImplementedError(
        f"task {task.name!r} has no ONNX export; exportable tasks: {', '.join(EXPORTABLE)}"
    )
