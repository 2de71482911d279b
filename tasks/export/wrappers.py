"""Export modules for classification and segmentation: raw pixels in, plain tensors out.

Every export module takes ``images``: Tensor[B, 3, H, W] RGB in 0..255 (uint8, or float
holding the same values) and bakes the task's preprocessing into the graph, so an ONNX
caller needs nothing from this project. Detection lives in ``tasks/export/detection.py``;
``ResizeTo`` here is the shape-following resize that detection and segmentation share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.classify.model import tta_logits


def scale64(numerator: float, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` as float64 ``[1]``, in eager PyTorch and in the exported graph
    alike, for image sizes computed as ``floor(side * scale)`` the way torchvision does.

    The TorchScript exporter turns 0-d float64 arithmetic (``number / tensor`` included) into
    float32, and a size computed in float32 can come out a pixel short of eager's (121 *
    (128 / 121) is 127.99999 in float32, whose floor is 127), which moves every box or mask of
    that image. 1-d tensors keep their float64."""
    return torch.full((1,), float(numerator), dtype=torch.float64) / denominator.reshape(1).double()


class ResizeTo(torch.autograd.Function):
    """Bilinear resize (half-pixel centres, no antialiasing) of ``x [B, C, H, W]`` to the size
    held in the tensor ``size [2]``: exported as one ONNX ``Resize`` with ``sizes``, so the
    output size stays computed from the input shape (``F.interpolate`` would bake it in)."""

    @staticmethod
    def forward(ctx, x: Tensor, size: Tensor) -> Tensor:  # noqa: ANN001
        hw = (int(size[0]), int(size[1]))
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)

    @staticmethod
    def symbolic(g, x, size):  # noqa: ANN001, ANN205
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        lead = g.op(
            "Slice",
            g.op("Shape", x),
            *(g.op("Constant", value_t=torch.tensor([v])) for v in (0, 2)),
        )
        sizes = g.op("Concat", lead, g.op("Cast", size, to_i=7), axis_i=0)  # 7 = int64
        return g.op(
            "Resize", x, empty, empty, sizes, mode_s="linear",
            coordinate_transformation_mode_s="half_pixel", cubic_coeff_a_f=-0.75,
            nearest_mode_s="floor",
        )  # fmt: skip


class ClassifyExport(nn.Module):
    """``images [B, 3, H, W] -> (logits [B, K], probs [B, K])``.

    The image is resized (bilinear, no antialiasing) to ``image_size`` x ``image_size``, the
    size the model was trained at; at exactly that size the resize is the identity, so callers
    that want training-identical pixels resize with PIL first (``tasks.inference`` does).
    ``Classifier`` itself normalises with the mean/std it was trained with.
    """

    def __init__(
        self, model: nn.Module, image_size: int, tta_flip: bool = False, tta_translate: int = 0
    ) -> None:
        super().__init__()
        self.model, self.image_size = model, image_size
        self.tta_flip, self.tta_translate = tta_flip, tta_translate

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.float()
        x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        logits = tta_logits(self.model, x, self.tta_flip, self.tta_translate)
        return logits, logits.softmax(1)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x [B, C, H, W]`` right/bottom to multiples of ``multiple``.

    While tracing, ``x.shape`` entries are tensors, so the padding stays a function of the
    input shape in an exported graph with dynamic height and width.
    """
    h, w = x.shape[-2], x.shape[-1]
    return F.pad(
        x, (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple)
    )


class SegmentExport(nn.Module):
    """``images [B, 3, H, W] -> (logits [B, K, H, W] float, labels [B, H, W] int64)``.

    Pixels are scaled to 0..1 and normalised with ``mean``/``std`` (0..1 units); with
    ``max_size`` the image is shrunk so its longest side is at most that (the training scale),
    and each factor of ``scales`` resizes it from there; each resized image is padded
    right/bottom to the backbone's largest stride, run once (plus the mirror image when
    ``flip``), cropped, and its logits resized back to H x W and averaged: the same steps as
    ``tasks.segment.infer.predict_logits``.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        multiple: int,
        flip: bool = False,
        max_size: int = 0,
        scales: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__()
        self.model, self.multiple, self.flip, self.max_size = model, multiple, flip, max_size
        self.scales = tuple(float(f) for f in scales)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def _logits(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        logits = self.model(pad_to_multiple(x, self.multiple)).preds[:, :, :h, :w]
        if self.flip:
            mirrored = self.model(pad_to_multiple(x.flip(3), self.multiple)).preds
            logits = (logits + mirrored[:, :, :h, :w].flip(3)) / 2
        return logits

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = (images.float() / 255.0 - self.mean) / self.std
        if not self.max_size and self.scales == (1.0,):
            logits = self._logits(x)
            return logits, logits.argmax(1)
        h, w = torch.as_tensor(x.shape[-2]), torch.as_tensor(x.shape[-1])
        hw = torch.stack([h, w])  # the input size, which the logits return to
        # Min/Max, not clamp: ONNX Runtime has no float64 Clip before opset 12
        one = torch.ones(1, dtype=torch.float64)
        scale = one
        if self.max_size:
            scale = torch.minimum(scale64(self.max_size, torch.maximum(h, w)), one)
        total = None
        for factor in self.scales:
            factor64 = torch.full((1,), factor, dtype=torch.float64)  # see scale64
            size = torch.maximum(hw.double().mul(scale * factor64).round(), one)
            logits = ResizeTo.apply(self._logits(ResizeTo.apply(x, size)), hw)
            total = logits if total is None else total + logits
        logits = total if len(self.scales) == 1 else total / len(self.scales)
        return logits, logits.argmax(1)
