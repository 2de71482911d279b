"""Grad-CAM (Selvaraju et al. 2017) for a classification checkpoint, via ``pytorch_grad_cam``.

The target layer is the last stage of the backbone (``layer3`` of a CIFAR ResNet,
``layer4`` of an ImageNet one): its feature map is weighted by the spatially averaged
gradient of the predicted class score, summed over channels and passed through a ReLU,
which shows where in the image the evidence for the prediction lies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tasks.images import read_image_rgb


class LogitsOnly(nn.Module):
    """``Classifier`` -> plain logits ``Tensor[B, K]`` (what ``pytorch_grad_cam`` expects)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images).preds


def last_stage(model: nn.Module) -> nn.Module:
    """The backbone's last stage module (``layerK`` with the largest K)."""
    backbone = getattr(model, "backbone", None)
    stages = [n for n, _ in backbone.named_children() if n.startswith("layer")] if backbone else []
    if not stages:
        raise ValueError(
            f"{type(model).__name__} has no backbone.layerK stages; Grad-CAM here needs a "
            "resvision ResNet classifier (model.backbone.layer1..)"
        )
    return getattr(backbone, max(stages, key=lambda n: int(n[5:])))


def grad_cam(
    model: nn.Module, images: Tensor, target_class: int | None = None
) -> tuple[np.ndarray, Tensor]:
    """Class activation maps ``float32 [B, H, W]`` in 0..1 and the logits ``[B, K]``.

    images: ``[B, 3, H, W]`` in 0..255 pixel units (the classifier normalises itself).
    target_class: explain this class for every image; None = each image's prediction.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped = LogitsOnly(model).eval()
    with torch.no_grad():
        logits = wrapped(images.float())
    classes = logits.argmax(1).tolist() if target_class is None else [target_class] * len(images)
    targets = [ClassifierOutputTarget(c) for c in classes]
    with GradCAM(model=wrapped, target_layers=[last_stage(model)]) as cam:
        maps = cam(input_tensor=images.float(), targets=targets)
    return maps.astype(np.float32), logits


def write_overlays(
    model: nn.Module,
    task: Any,
    image_paths: Sequence[str | Path],
    out_dir: Path,
    *,
    display_size: int = 224,
) -> list[dict[str, Any]]:
    """One ``<stem>_gradcam.png`` per image (image | heat-map overlay, with the predicted
    class and its probability); returns ``[{"image", "overlay", "class", "prob"}]``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from tasks.plots import plt, save_figure  # matplotlib loads only when pictures are drawn

    size = task.cfg.data.image_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    results = []
    for path in image_paths:
        rgb = read_image_rgb(path, size)
        batch = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
        maps, logits = grad_cam(model, batch)
        probs = logits.softmax(1)[0]
        k = int(probs.argmax())
        name = task.class_names[k] if k < len(task.class_names) else str(k)
        overlay = show_cam_on_image(rgb.astype(np.float32) / 255, maps[0], use_rgb=True)
        fig, axes = plt.subplots(1, 2, figsize=(2 * display_size / 80, display_size / 80), dpi=80)
        for ax, img, caption in ((axes[0], rgb, Path(path).name), (axes[1], overlay, "Grad-CAM")):
            ax.imshow(img, interpolation="bilinear")
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
        fig.suptitle(f"predicted {name} ({float(probs[k]):.2f})", fontsize=9)
        target = save_figure(fig, out_dir / f"{Path(path).stem}_gradcam.png")
        results.append(
            {"image": str(path), "overlay": str(target), "class": name, "prob": float(probs[k])}
        )
    return results
