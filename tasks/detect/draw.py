"""Pictures of detections: boxes with class names and scores, grids, precision-recall curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

PRED_COLOUR = "red"
GT_COLOUR = "lime"


def draw_detections(
    image: Tensor,
    pred: dict[str, Tensor],
    class_names: Sequence[str],
    *,
    gt_boxes: Tensor | None = None,
    score_thresh: float = 0.3,
) -> Tensor:
    """uint8 [3, H, W] image -> uint8 [3, H, W] with ground truth (green, when given) and the
    predictions scoring >= ``score_thresh`` (red, labelled "name score")."""
    out = image
    if gt_boxes is not None and len(gt_boxes):
        out = draw_bounding_boxes(out, gt_boxes.float(), colors=GT_COLOUR, width=1)
    keep = pred["scores"] >= score_thresh
    boxes, scores, labels = pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep]
    if len(boxes):
        names = [
            f"{class_names[int(c) - 1]} {float(s):.2f}" for c, s in zip(labels, scores, strict=True)
        ]
        out = draw_bounding_boxes(out, boxes.float(), labels=names, colors=PRED_COLOUR, width=2)
    return out


def save_image(image: Tensor, path: Path) -> Path:
    """Writes uint8 [3, H, W] as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)
    return path


def save_grid(images: Sequence[Tensor], path: Path, *, size: int = 256) -> Path:
    """Resizes each uint8 [3, H, W] image to fit ``size`` x ``size``, tiles them, saves PNG."""
    tiles = []
    for img in images:
        scale = size / max(img.shape[-2:])
        h, w = round(img.shape[-2] * scale), round(img.shape[-1] * scale)
        small = torch.nn.functional.interpolate(img[None].float(), size=(h, w), mode="bilinear")
        tile = torch.zeros(3, size, size)
        tile[:, :h, :w] = small[0]
        tiles.append(tile)
    grid = make_grid(torch.stack(tiles), nrow=4, padding=2).clamp(0, 255).to(torch.uint8)
    return save_image(grid, path)


def plot_precision_recall(
    precision: np.ndarray, class_names: Sequence[str], path: Path, legend_max: int = 10
) -> Path:
    """Per-class precision-recall curves at IoU 0.5 from COCOeval's precision array
    [T, R=101, K, A, M] (area "all", 100 detections). With more than ``legend_max`` classes
    only the best and the worst half of that many are coloured and named; the rest are grey
    (an 80-entry legend covers the plot and defeats the layout)."""
    from tasks.plots import plt, save_figure  # matplotlib loads only when a plot is drawn

    recall = np.linspace(0, 1, precision.shape[1])
    curves = {}  # class index -> (precision over recall, AP50) for classes with ground truth
    for k in range(len(class_names)):
        p = precision[0, :, k, 0, -1]
        if (p > -1).any():
            curves[k] = (np.clip(p, 0, None), p[p > -1].mean())
    ranked = sorted(curves, key=lambda k: -curves[k][1])
    named = set(ranked if len(ranked) <= legend_max else
                ranked[: legend_max // 2] + ranked[-(legend_max // 2):])  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 4))
    for k in ranked:
        p, ap50 = curves[k]
        if k in named:
            ax.plot(recall, p, label=f"{class_names[k]} (AP50 {ap50:.2f})")
        else:
            ax.plot(recall, p, color="0.8", linewidth=0.8)
    title = "precision-recall at IoU 0.5"
    if len(named) < len(curves):
        half = len(named) // 2
        title += f"\n({len(curves)} classes; named: the {half} best and {half} worst)"
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(0, 1.02))
    if named:
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=100)
