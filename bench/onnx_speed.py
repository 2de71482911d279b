"""Eager PyTorch vs ONNX Runtime latency for each task, same run: on the CPU (fp32, int8) or
on a GPU (CUDA provider with IO binding, fp32 and fp16 against eager fp32 and autocast fp16).

    python bench/onnx_speed.py [--tasks classify,detect,segment,int8] [--runs 5] [--out FILE]
    python bench/onnx_speed.py --device cuda --runs 50

Models (random weights: speed does not depend on them): ResNet-50 classifier at 224x224
(batch 1 and 8); Faster R-CNN ResNet-50-FPN (torchvision's sizes: 256-channel FPN, 1000
proposals, 1024-wide box head) on 512x683 input (short side 512, not torchvision's 800, to
keep the run short); DeepLabV3 ResNet-50 at output stride 8 on 384x384; ResNet-50 int8 QDQ
(calibrated on 16 generated images; CPU only). Both runtimes use every core this process may
use; ORT runs with ORT_ENABLE_ALL. Eager and ORT runs alternate. On CUDA both arms start from
the same host uint8 batch and end with their outputs on the host; both use their default TF32
settings for fp32. Prints p50/p90 latency (ms) and images/s per row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils._pytree import tree_map

from tasks import TASKS
from tasks.config import load_config
from tasks.export.metadata import build_metadata
from tasks.export.onnx_export import export_onnx
from tasks.export.parity import compare_detections
from tasks.export.quantize import to_fp16, to_int8
from tasks.export.spec import build_export
from tasks.inference import OnnxModel, physical_cores

CONFIGS = {
    "classify": ["model.backbone=resnet50", "data.image_size=224",
                 "model.zero_init_residual=false"],
    "detect": ["model.backbone=resnet50", "model.out_indices=[1,2,3,4]", "model.fpn_channels=256",
               "model.anchor_sizes=[32,64,128,256,512]", "model.norm=frozen_batchnorm",
               "model.head_norm=none", "model.representation_size=1024",
               "model.rpn_pre_nms_top_n_test=1000", "model.rpn_post_nms_top_n_test=1000",
               "model.min_size=512", "model.max_size=853"],
    "segment": ["model.backbone=resnet50", "model.head=deeplabv3", "model.output_stride=8"],
}  # fmt: skip
LABELS = {
    "classify": "resnet50 224",
    "int8": "resnet50 224 int8 (vs fp32 eager)",
    "detect": "faster_rcnn r50-fpn 512",
    "segment": "deeplabv3 r50 os8 384",
}
SHAPES = {"classify": (224, 224), "detect": (512, 683), "segment": (384, 384)}


def timed_pair(
    eager: Callable[[], object], onnx: Callable[[], object], runs: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50, p90) latency in ms of ``eager`` and of ``onnx``, their runs alternating so a
    drift in the machine's speed (frequent on these shared CPUs) hits both alike. Each timed
    run follows an untimed one of the same runtime: the other runtime's worker threads are
    still spinning right after a switch (that slowed eager ResNet-50 at batch 1 by 1.8x)."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(runs):
        for i, fn in enumerate((eager, onnx)):
            fn()
            start = time.perf_counter()
            fn()
            times[i].append((time.perf_counter() - start) * 1000)
    p = [(float(np.percentile(t, 50)), float(np.percentile(t, 90))) for t in times.values()]
    return p[0], p[1]


def build(task_name: str, tmp: Path):  # noqa: ANN201
    task = TASKS.create(
        task_name, cfg=load_config(TASKS.get(task_name).config_class, None, CONFIGS[task_name])
    )
    task.class_names = [f"c{i}" for i in range(20 if task_name != "classify" else 1000)]
    torch.manual_seed(0)
    model = task.build_model().eval()
    spec = build_export(model, task)
    spec.sample_hw = SHAPES[task_name]
    meta = build_metadata(task, model, spec, input_dtype="uint8", input_shape=[None, 3, None, None])
    path = tmp / f"{task_name}.onnx"
    export_onnx(spec, path, metadata=meta, dynamic=True)
    return task, model, spec, path


def row(name: str, batch: int, eager: tuple[float, float], onnx: tuple[float, float]) -> dict:
    r = dict(model=name, batch=batch, eager_p50=eager[0], eager_p90=eager[1], ort_p50=onnx[0],
             ort_p90=onnx[1], eager_ips=1000 * batch / eager[0], ort_ips=1000 * batch / onnx[0],
             speedup=eager[0] / onnx[0])  # fmt: skip
    print(f"{name:28s} b{batch}  eager p50 {eager[0]:8.1f} p90 {eager[1]:8.1f} ms | ORT p50 "
          f"{onnx[0]:8.1f} p90 {onnx[1]:8.1f} ms | {r['ort_ips']:6.1f} img/s | "
          f"{r['speedup']:.2f}x", flush=True)  # fmt: skip
    return r


def eager_call(base: str, model: torch.nn.Module, spec, x: torch.Tensor,  # noqa: ANN001
               device: torch.device, amp: torch.dtype | None) -> Callable[[], object]:  # fmt: skip
    """One eager inference from the host uint8 batch ``x`` to outputs on the host."""

    def run() -> object:
        batch = x.to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if base == "detect":
                out = [dict(p) for p in model([im.float() / 255 for im in batch]).preds]
            elif base == "classify":
                out = model(batch.float()).preds  # normalises itself
            else:
                out = spec.module(batch)
        return tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, out)

    return run


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="classify,detect,segment,int8")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(physical_cores())
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    gpu = f", {torch.cuda.get_device_name()}" if on_gpu else ""
    print(f"threads {physical_cores()}, torch {torch.__version__}{gpu}")
    precisions = {"fp32": None, "fp16": torch.float16} if on_gpu else {"fp32": None}
    rows, tmp = [], Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    for name in args.tasks.split(","):
        if name == "int8" and on_gpu:
            print("int8: skipped on CUDA (QDQ int8 is a CPU path here; TensorRT would run it)")
            continue
        base = "classify" if name == "int8" else name
        task, model, spec, path = build(base, tmp)
        spec.module.to(device)
        h, w = SHAPES[base]
        if name == "int8":
            calib = tmp / "calib"
            calib.mkdir(exist_ok=True)
            for i in range(16):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    calib / f"{i}.png"
                )
            to_int8(path, tmp / "int8.onnx", calib)
            path = tmp / "int8.onnx"
        for precision, amp in precisions.items():
            if precision == "fp16":
                to_fp16(path, tmp / f"{name}-fp16.onnx")
                path = tmp / f"{name}-fp16.onnx"
            ort_model = OnnxModel(path, provider="cuda" if on_gpu else "cpu")
            label = LABELS[name] + (
                f" {precision} {ort_model.provider.removesuffix('ExecutionProvider')}"
                if on_gpu
                else ""
            )
            for batch in (1, 8) if base == "classify" else (1,):
                x = torch.from_numpy(rng.integers(0, 256, (batch, 3, h, w), dtype=np.uint8))
                eager_fn = eager_call(base, model, spec, x, device, amp)
                arr = x.numpy()
                runs = args.runs if batch == 1 else max(2, args.runs // 2)
                ort_fn = lambda o=ort_model, a=arr: o.run_batch(a)  # noqa: E731
                rows.append(row(label, batch, *timed_pair(eager_fn, ort_fn, runs)))
                if base == "detect" and amp is None:
                    got = ort_model.run_batch(arr)
                    print("  detections:", compare_detections(model, x.to(device), got).detail)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
