"""float16 and static int8 (QDQ) versions of an exported fp32 model.

int8: ``quant_pre_process`` (shape inference + graph optimisation) then ``quantize_static``
with QDQ nodes and per-channel weights, calibrated on images of a folder (MinMax). Only
Conv/MatMul-like operators are quantized; detection post-processing stays in float.
fp16: ``onnxruntime.transformers.float16`` with float inputs/outputs kept, meant for the CUDA
provider (the CPU provider runs many fp16 kernels by casting, slowly).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from tasks.base import Task
from tasks.export.evaluate import evaluate_onnx, latency_ms
from tasks.export.metadata import read_metadata, write_metadata
from tasks.inference import IMAGE_EXTENSIONS, OnnxModel

CALIBRATION_IMAGES = 64  # images read from the calibration folder at most
FP16_KEEP_FLOAT = ["NonMaxSuppression", "RoiAlign", "Resize", "TopK"]  # index/size-sensitive ops


class FolderReader(CalibrationDataReader):
    """Feeds ``images [B, 3, H, W]`` (B = the graph's static batch, else 1) of up to ``limit``
    files found under ``folder``, prepared as ``OnnxModel`` prepares them (so calibration
    sees deployment pixels)."""

    def __init__(
        self, model: OnnxModel, folder: str | Path, limit: int = CALIBRATION_IMAGES
    ) -> None:
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"--int8 {str(folder)!r} holds no images (.jpg, .png, ...)")
        images = [model.prepare(p).astype(model.dtype) for p in files[:limit]]
        batch = model.input["shape"][0] or 1  # a static graph takes only its own batch size
        if len(images) < batch:
            raise ValueError(
                f"--int8 {str(folder)!r}: {len(images)} images, the graph's batch is {batch}"
            )
        groups = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
        self.batches = iter([np.stack(g) for g in groups])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch}


def _copy_metadata(src: onnx.ModelProto, dst_path: Path, precision: str) -> None:
    meta = {p.key: p.value for p in src.metadata_props}
    meta["precision"] = precision
    model = onnx.load(str(dst_path))
    write_metadata(model, meta)
    onnx.save(model, str(dst_path))


def to_int8(src: Path, dst: Path, calib_dir: str | Path, task_name: str) -> None:
    """Static QDQ int8 model of ``src`` at ``dst``, calibrated on ``calib_dir``."""
    reader = FolderReader(OnnxModel(src, provider="cpu"), calib_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=task_name == "detect")
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    _copy_metadata(onnx.load(str(src)), dst, "int8")
    print(f"int8: calibrated on {calib_dir}; wrote {dst}")


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, float32 inputs/outputs kept; checked to load in ORT."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FLOAT)
    onnx.save(half, str(dst))
    _copy_metadata(model, dst, "fp16")
    OnnxModel(dst, provider="auto")  # loads (CPU here: parity is meant for the CUDA provider)
    print(f"fp16: wrote {dst} (run it with --provider cuda; CPU parity not checked)")


def report(task: Task, fp32: Path, int8: Path, val_dir: str | Path) -> dict[str, float]:
    """Print and return the accuracy and batch-1 CPU latency of both models on ``val_dir``."""
    meta = read_metadata(onnx.load(str(fp32), load_external_data=False))
    shape = meta["input"]["shape"]
    h, w = [s if s is not None else 224 for s in shape[2:]]
    if meta["preprocess"].get("resize") == "square":
        h = w = meta["preprocess"]["size"]
    dtype = np.uint8 if meta["input"]["dtype"] == "uint8" else np.float32
    name, acc32 = evaluate_onnx(fp32, task, val_dir)
    _, acc8 = evaluate_onnx(int8, task, val_dir)
    ms32, ms8 = latency_ms(fp32, (1, 3, h, w), dtype), latency_ms(int8, (1, 3, h, w), dtype)
    print(f"int8 report on {val_dir}: {name} fp32 {acc32:.4f} -> int8 {acc8:.4f} "
          f"({acc8 - acc32:+.4f}); CPU batch-1 latency {ms32:.2f} -> {ms8:.2f} ms "
          f"({ms32 / ms8:.2f}x)")  # fmt: skip
    return {"fp32": acc32, "int8": acc8, "ms_fp32": ms32, "ms_int8": ms8}
