"""Trace an ``ExportSpec`` to ONE self-contained ``.onnx`` file of standard operators.

The TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used: torchvision registers
its ``nms`` / ``roi_align`` translations there, and ``tasks.export.detection`` emits
``NonMaxSuppression`` / ``Resize`` itself through ``autograd.Function.symbolic``. Shapes read
while tracing are graph values, so batch, height and width stay dynamic with ``dynamic=True``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from tasks.export.metadata import write_metadata
from tasks.export.spec import ExportSpec

DEFAULT_OPSET = 17
# the oldest opset every task exports at (Resize with a sizes input, NonMaxSuppression,
# RoiAlign; at 7-10 the exporter fails deep inside with a dump of the graph) and the newest
# this PyTorch's exporter writes
MIN_OPSET = 11
try:
    from torch.onnx._constants import ONNX_MAX_OPSET as MAX_OPSET
except ImportError:  # a PyTorch that moved it
    MAX_OPSET = 23
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
STANDARD_DOMAINS = ("", "ai.onnx")


class ExportError(RuntimeError):
    """The export produced no valid graph (custom op, checker failure, parity failure)."""


def export_onnx(
    spec: ExportSpec,
    path: str | Path,
    *,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    input_dtype: str = "uint8",
    batch: int = 1,
) -> onnx.ModelProto:
    """Export ``spec.module`` to ``path`` with ``metadata`` in ``metadata_props``; return it.

    The tracing input is ``images [batch, 3, *spec.sample_hw]`` of ``input_dtype`` ("uint8"
    or "float32" holding 0..255). With ``dynamic`` the batch, height and width axes are free.
    Raises ExportError when a node is not a standard ONNX operator or the checker fails.
    """
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype={input_dtype!r}: expected one of {', '.join(INPUT_DTYPES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randint(0, 256, (batch, 3, *spec.sample_hw), generator=gen)
    sample = sample.to(INPUT_DTYPES[input_dtype])
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, **spec.output_axes}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values are expected
        raw = Path(tmp) / "raw.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(
                    spec.module,
                    (sample,),
                    str(raw),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["images"],
                    output_names=list(spec.outputs),
                    dynamic_axes=axes if dynamic else None,
                    do_constant_folding=True,
                )
        except torch.onnx.errors.OnnxExporterError as err:  # an operator with no ONNX form
            raise ExportError(
                f"the ONNX exporter cannot write this model at opset {opset}: "
                f"{str(err).splitlines()[0][:300]}"
            ) from None
        model = onnx.load(str(raw))
    custom = sorted(
        {f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS}
    )
    if custom:
        raise ExportError(f"the exported graph uses non-standard operators {custom}")
    write_metadata(model, metadata)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker rejected the exported model: {err}") from None
    onnx.save(model, str(path))
    return model
