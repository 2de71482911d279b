"""ONNX Runtime vs PyTorch on real images at several sizes and batch sizes.

Classification and segmentation compare logits (and probabilities) element-wise. Detection
compares the exported graph against ``Detector``'s own eager forward (torchvision's code
path, not the export module): every eager detection must have an ORT detection of the same
label at IoU >= 0.99 (or every coordinate within ``BOX_ATOL``: zero-area boxes, which FCOS can
predict, have no IoU) with a score within the tolerance, and the counts must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from tasks.base import Task
from tasks.export.spec import ExportSpec
from tasks.inference import OnnxModel

TOLERANCE = 1e-3  # max |difference| of logits, probabilities and detection scores
MIN_IOU = 0.99  # a detection matches its eager counterpart at this IoU or more
BOX_ATOL = 1e-2  # ... or with every coordinate within this many pixels


@dataclass
class ParityRow:
    shape: tuple[int, ...]
    max_diff: float  # largest |difference| of the compared float outputs
    detail: str  # e.g. "100/100 detections matched, min IoU 0.9999"
    ok: bool


def parity_sizes(spec: ExportSpec, dynamic: bool, batch: int) -> list[tuple[int, int, int]]:
    """(B, H, W) to check: the export size, plus other sizes and batches when dynamic."""
    h, w = spec.sample_hw
    if not dynamic:
        return [(batch, h, w)]
    return [(1, h, w), (2, max(16, h * 3 // 4), w + w // 4 + 3), (3, h + 13, max(16, w - 7))]


def _val_images(task: Task, count: int) -> list[Tensor]:
    """Up to ``count`` uint8 [3, H, W] images of the task's validation data ([] if none)."""
    try:
        ds = task.build_val_dataset()
        n = min(count, len(ds))
        if hasattr(ds, "raw"):  # segmentation: raw (image HWC, mask)
            return [torch.from_numpy(ds.raw(i)[0]).permute(2, 0, 1) for i in range(n)]
        return [ds[i][0] for i in range(n)]
    except Exception as err:  # missing data folders: generated images instead
        print(f"parity: validation data unavailable ({type(err).__name__}); using generated images")
        return []


def parity_batches(task: Task, sizes: list[tuple[int, int, int]], seed: int = 0) -> list[Tensor]:
    """uint8 [B, 3, H, W] batches: validation images resized to each size, or smooth random
    images (upsampled noise) when the task has no validation data at hand."""
    total = sum(b for b, _, _ in sizes)
    pool = _val_images(task, total)
    gen = torch.Generator().manual_seed(seed)
    batches, used = [], 0
    for b, h, w in sizes:
        imgs = []
        for _ in range(b):
            src = (
                pool[used % len(pool)].float()[None]
                if pool
                else torch.rand(1, 3, 8, 8, generator=gen) * 255
            )
            used += 1
            imgs.append(F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False))
        batches.append(torch.cat(imgs).round().clamp(0, 255).to(torch.uint8))
    return batches


@torch.no_grad()
def _compare_dense(spec: ExportSpec, batch: Tensor, got: dict[str, np.ndarray]) -> ParityRow:
    ref = dict(zip(spec.outputs, spec.module(batch), strict=False))
    diffs = {k: float((v.float() - torch.from_numpy(got[k]).float()).abs().max())
             for k, v in ref.items() if v.is_floating_point()}  # fmt: skip
    detail = ", ".join(f"{k} {d:.2e}" for k, d in diffs.items())
    if "labels" in ref:
        agree = float((ref["labels"].numpy() == got["labels"]).mean())
        detail += f", labels agree {agree:.4%}"
    worst = max(diffs.values())
    return ParityRow(tuple(batch.shape), worst, detail, worst <= TOLERANCE)


@torch.no_grad()
def compare_detections(model: nn.Module, batch: Tensor, got: dict[str, np.ndarray]) -> ParityRow:
    preds = model([img.float() / 255 for img in batch]).preds
    matched = total = 0
    worst, min_iou, counts_ok = 0.0, 1.0, True
    for i, ref in enumerate(preds):
        n = int(got["num_detections"][i])
        counts_ok &= n == len(ref["boxes"])
        total += len(ref["boxes"])
        if not n or not len(ref["boxes"]):
            continue
        boxes, scores, labels = (
            torch.from_numpy(got[k][i, :n]).to(ref["boxes"].device)
            for k in ("boxes", "scores", "labels")
        )
        close = (ref["boxes"][:, None] - boxes[None]).abs().amax(-1) <= BOX_ATOL
        iou = torch.where(close, 1.0, box_iou(ref["boxes"], boxes).nan_to_num(0.0))
        iou[ref["labels"][:, None] != labels[None, :]] = 0
        score_diff = (ref["scores"][:, None] - scores[None, :]).abs()
        iou[score_diff > TOLERANCE] = 0
        best, j = iou.max(1)
        matched += int((best >= MIN_IOU).sum())
        min_iou = min(min_iou, float(best.min()))
        worst = max(worst, float(score_diff.gather(1, j[:, None]).max()))
    ok = counts_ok and matched == total
    detail = f"{matched}/{total} detections matched (IoU >= {MIN_IOU}), min IoU {min_iou:.4f}"
    if not counts_ok:
        detail += ", detection counts differ"
    return ParityRow(tuple(batch.shape), worst, detail, ok)


def check_parity(
    task: Task, model: nn.Module, spec: ExportSpec, onnx_model: OnnxModel, batches: list[Tensor]
) -> list[ParityRow]:
    """One row per batch: ORT outputs of ``onnx_model`` against PyTorch on the same pixels."""
    rows = []
    for batch in batches:
        got = onnx_model.run_batch(batch.numpy().astype(onnx_model.dtype))
        if task.name == "detect":
            rows.append(compare_detections(model, batch, got))
        else:
            rows.append(_compare_dense(spec, batch, got))
    return rows
