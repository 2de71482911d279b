"""Batched augmentation for in-memory images: torch ops on whole ``[B, 3, H, W]`` batches.

Why not albumentations here (the library other tasks use per image): classification keeps
its images as one uint8 tensor, and a per-image Python pipeline would cost more than the
network on small images. These functions run on the training device in a handful of
kernels per batch, whatever the batch size.

Presets (``data.augment``):
  ``cifar``    reflect-pad by ``pad`` pixels, random crop back, horizontal flip.
  ``imagenet`` random-resized-crop (scale, ratio) to ``image_size``, horizontal flip.
  ``flip``     horizontal flip only.
  ``none``     identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.config import ConfigError

PRESETS = ("cifar", "imagenet", "flip", "none")


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror a random half of ``x [B, C, H, W]`` left-right."""
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Pad-and-crop: each image of ``x [B, C, H, W]`` shifted by up to ``pad`` pixels per
    axis, borders filled by reflection. Same shape and dtype out (uint8 stays uint8)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x.float() if not x.is_floating_point() else x, (pad,) * 4, mode="reflect")
    padded = padded.to(x.dtype)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    out = padded.gather(2, rows.expand(b, c, h, w + 2 * pad))
    return out.gather(3, cols.expand(b, c, h, w))


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inception-style crop of each image of ``x [B, C, H, W]`` (area fraction in ``scale``,
    aspect ratio log-uniform in ``ratio``) resized to ``[B, C, size, size]`` float, in one
    batched ``grid_sample``. Crops are clamped inside the image instead of re-drawn."""
    b = len(x)
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(b, device=dev).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    r = torch.exp(log_r)
    cw = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image width
    ch = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - cw)  # centre in [-1, 1]
    cy = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - ch)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = cw, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    src = x if x.is_floating_point() else x.float()
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(
    x: Tensor,
    preset: str,
    *,
    pad: int = 4,
    size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Apply ``preset`` (see the module docstring) to a uint8 or float batch ``[B, C, H, W]``."""
    if preset == "cifar":
        return random_flip(random_translate(x, pad, generator), generator)
    if preset == "imagenet":
        out = random_resized_crop(x, size or x.shape[-1], scale, generator=generator)
        return random_flip(out, generator)
    if preset == "flip":
        return random_flip(x, generator)
    if preset == "none":
        return x
    raise ConfigError(f"data.augment={preset!r}: expected one of {', '.join(PRESETS)}")
