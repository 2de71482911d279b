"""The ``metadata_props`` written into every exported ``.onnx``: enough to use the file alone.

Keys (all values are strings; JSON where structured):
  ``resvision_version``  project version that exported it
  ``task``               "classify" | "segment" | "detect"
  ``class_names``        JSON list; detection labels are 1-based (``class_names[label - 1]``)
  ``input``              JSON: name, layout "NCHW", channels "RGB", dtype, value range,
                         shape with null for dynamic axes
  ``outputs``            JSON list of output names
  ``preprocess``         JSON: what the graph does itself (resize rule, mean/std and units)
  ``feature_info``       JSON list of the backbone's [name, channels, stride]
  ``backbone``           the backbone's registry name
  ``precision``          "fp32" | "fp16" | "int8"
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

import onnx
from torch import nn

from tasks.base import Task
from tasks.export.spec import ExportSpec


def project_version() -> str:
    try:
        return importlib.metadata.version("resvision")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_metadata(
    task: Task,
    model: nn.Module,
    spec: ExportSpec,
    *,
    input_dtype: str,
    input_shape: list[int | None],
    precision: str = "fp32",
) -> dict[str, str]:
    """The metadata dictionary of an export (see the module docstring for the keys)."""
    info = [[f.name, f.channels, f.stride] for f in model.backbone.feature_info]
    return {
        "resvision_version": project_version(),
        "task": task.name,
        "class_names": json.dumps(list(task.class_names)),
        "input": json.dumps(
            {
                "name": "images",
                "layout": "NCHW",
                "channels": "RGB",
                "dtype": input_dtype,
                "range": "0..255",
                "shape": input_shape,
            }
        ),  # fmt: skip
        "outputs": json.dumps(list(spec.outputs)),
        "preprocess": json.dumps(spec.preprocess),
        "feature_info": json.dumps(info),
        "backbone": str(task.cfg.model.backbone),
        "precision": precision,
    }


def write_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace ``model``'s metadata_props entries for these keys (others are kept)."""
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props as a dict, with the JSON-valued keys decoded."""
    raw = {p.key: p.value for p in model.metadata_props}
    for key in ("class_names", "input", "outputs", "preprocess", "feature_info"):
        if key in raw:
            raw[key] = json.loads(raw[key])
    return raw
