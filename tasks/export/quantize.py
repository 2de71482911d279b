"""float16 and static int8 (QDQ) versions of an exported fp32 model.

int8: ``quant_pre_process`` (shape inference + graph optimisation) then ``quantize_static``
with QDQ nodes, uint8 activations and per-channel int8 weights (U8S8: ONNX Runtime's fast
path on x86 without VNNI; S8S8 ran 1.4x slower on an AVX2 CPU), calibrated on images of a
folder (MinMax). The backbone, neck and head layers run in int8; what turns their outputs
into answers stays float (``float_nodes``): box decoding, score ranking (``TopK``),
``NonMaxSuppression``, the RoI boxes of ``RoiAlign``, every ``Resize`` and the output
formatting. An int8 box coordinate
would be off by up to scale/2 pixels, and an int8 score ranking would tie many scores.
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
from PIL import Image

from tasks.base import Task
from tasks.export.evaluate import EVAL_IMAGES, evaluate_onnx, latency_ms, spread
from tasks.export.metadata import read_metadata, write_metadata
from tasks.images import DataError, image_files, read_image_rgb
from tasks.inference import IMAGE_EXTENSIONS, OnnxModel

CALIBRATION_IMAGES = 64  # images read from the calibration folder at most
FP16_KEEP_FLOAT = ["NonMaxSuppression", "RoiAlign", "Resize", "TopK"]  # index/size-sensitive ops
# int8: op -> indices of its inputs that stay float (None: all). RoiAlign's features (input 0)
# may arrive int8 and are dequantized before it; its boxes and batch indices may not.
# InstanceNormalization (GroupNorm as exported) runs in float: the quantizer would quantize
# its 1-D scale per channel along axis 1, which that tensor lacks, and break its output.
INT8_FLOAT_INPUTS: dict[str, tuple[int, ...] | None] = {
    "NonMaxSuppression": None, "TopK": None, "Resize": None, "RoiAlign": (1, 2),
    "InstanceNormalization": (1, 2),
}  # fmt: skip
INT8_COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # float regions end here
SHAPE_READERS = ("Shape", "Size")  # read only the shape of their input, never its values


def calibration_files(folder: str | Path, limit: int = CALIBRATION_IMAGES) -> list[Path]:
    """Up to ``limit`` image files under ``folder``, spread over its sorted listing (an
    ImageFolder lists class by class: its first 64 files would calibrate on one class); one
    clear error otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--int8 {str(folder)!r} is not a folder; expected calibration images"
        )
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(
            f"--int8 {str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected "
            "a few dozen images like those the model will see"
        )
    return [files[i] for i in spread(len(files), limit)]


class FolderReader(CalibrationDataReader):
    """Feeds ``images [B, 3, H, W]`` (B = the graph's static batch, else 1) of the files of
    ``calibration_files(folder)``, prepared as ``OnnxModel`` prepares them (so calibration
    sees deployment pixels) and resized (bilinear) where the graph has a fixed H, W."""

    def __init__(self, model: OnnxModel, folder: str | Path) -> None:
        batch, _, height, width = model.input["shape"]
        images = []
        for path in calibration_files(folder):
            image = read_image_rgb(path)  # a corrupt file: an error naming it
            if height is not None and image.shape[:2] != (height, width):
                image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
            images.append(model.prepare(image).astype(model.dtype))
        batch = batch or 1  # a static graph takes only its own batch size
        if len(images) < batch:
            raise DataError(
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


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ``quantize_static`` must leave in float: the ``INT8_FLOAT_INPUTS``
    operators, every node between a graph output (or one of their float inputs) and the
    nearest Conv/Gemm/MatMul above it, and those Conv/Gemm/MatMul whose outputs only float
    nodes read (the last layers of the heads: small, and int8 outputs would be rounded)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    pending = [out.name for out in model.graph.output]
    keep: set[str] = set()
    for node in model.graph.node:
        if node.op_type in INT8_FLOAT_INPUTS:
            keep.add(node.name)
            wanted = INT8_FLOAT_INPUTS[node.op_type] or range(len(node.input))
            pending += [node.input[i] for i in wanted if i < len(node.input)]
    boundary: list[onnx.NodeProto] = []
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.name in keep:
            continue
        if node.op_type in INT8_COMPUTE_OPS:
            boundary.append(node)
            continue
        keep.add(node.name)
        if node.op_type not in SHAPE_READERS:
            pending += list(node.input)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
    keep |= {n.name for n in boundary if all(readers.get(o, set()) <= keep for o in n.output)}
    return sorted(keep)


def _unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed or repeated node name a unique one, in place: the quantizer
    excludes nodes by name, and ONNX Runtime refuses a graph with two nodes of one name
    (``convert_float_to_float16`` writes one ``..._cast_to_fp32_node`` per kept output)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_{i}"
        seen.add(node.name)
    return model


def to_int8(src: Path, dst: Path, calib_dir: str | Path) -> None:
    """Static QDQ int8 model of ``src`` at ``dst``, calibrated on ``calib_dir``."""
    reader = FolderReader(OnnxModel(src, provider="cpu"), calib_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference (meant for transformers) fails on detection graphs and on
        # some static CNN graphs, and ONNX's own shape inference is all QDQ placement needs
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        named = _unique_node_names(onnx.load(str(pre)))
        onnx.save(named, str(pre))
        keep = float_nodes(named)
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
        )  # fmt: skip
    _copy_metadata(onnx.load(str(src)), dst, "int8")
    print(f"int8: quantized, calibrated on {calib_dir}")


def _drop_repeated_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes that define an already defined value with the same operator, inputs and
    attributes, in place: ``convert_float_to_float16`` writes one identical
    ``..._cast_to_fp32`` Cast per reader of a kept-float constant, which ONNX Runtime refuses
    as a duplicate definition. The first definition precedes every reader of the repeats."""
    defined: dict[str, bytes] = {}
    kept = []
    for node in model.graph.node:
        key = onnx.NodeProto(op_type=node.op_type, input=node.input, attribute=node.attribute)
        signature = key.SerializeToString()
        if node.output and all(defined.get(o) == signature for o in node.output):
            continue
        defined.update({o: signature for o in node.output})
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def _omit_empty_resize_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Resize``'s empty ``roi``/``scales`` constants (how PyTorch exports "not
    given") by omitted inputs, in place. Once the fp16 converter routes them through Casts,
    shape inference can no longer see they are empty and rejects the node."""
    empty = {init.name for init in model.graph.initializer if 0 in init.dims}
    empty |= {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].name == "value" and 0 in n.attribute[0].t.dims
    }
    for node in model.graph.node:
        if node.op_type == "Resize":
            for i in (1, 2):
                if i < len(node.input) and node.input[i] in empty:
                    node.input[i] = ""
    return model


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, float32 inputs/outputs kept; checked to load in ORT."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(
        _omit_empty_resize_inputs(model), keep_io_types=True, op_block_list=FP16_KEEP_FLOAT
    )
    onnx.save(_unique_node_names(_drop_repeated_nodes(half)), str(dst))
    _copy_metadata(model, dst, "fp16")
    OnnxModel(dst, provider="auto")  # loads (CPU here: parity is meant for the CUDA provider)
    print("fp16: converted (run it with --provider cuda; CPU parity not checked)")


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
    print(f"int8 report on {val_dir} (at most {EVAL_IMAGES} images, spread over it): "
          f"{name} fp32 {acc32:.4f} -> int8 {acc8:.4f} "
          f"({acc8 - acc32:+.4f}); CPU batch-1 latency {ms32:.2f} -> {ms8:.2f} ms "
          f"({ms32 / ms8:.2f}x)")  # fmt: skip
    return {"fp32": acc32, "int8": acc8, "ms_fp32": ms32, "ms_int8": ms8}
