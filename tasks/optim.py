"""Optimizer and weight EMA built from ``TrainConfig``.

Weight decay applies to conv and linear weights only (tensors with 2+ dims): decaying norm
scales and biases pulls them towards 0 for no regularising benefit and hurts accuracy.
"""

from __future__ import annotations

import torch
from timm.utils.model_ema import ModelEmaV3
from torch import nn

from tasks.config import ConfigError, TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (ndim >= 2) and not decayed (norm weights, biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or AdamW (betas ``(momentum, 0.999)``). LR is set per step."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise ConfigError(f"train.optimizer={cfg.optimizer!r} is not one of sgd, adamw")


def build_ema(model: nn.Module, decay: float) -> ModelEmaV3 | None:
    """timm's EMA of parameters and buffers (``ema.module`` is the averaged model), or None.

    The decay warms up (timm's ``use_warmup``: ``1 - (1 + step) ** (-2 / 3)``, capped at
    ``decay``; 0.99 at step 1,000) so a short run's average is not mostly the random
    initial weights: at a fixed 0.999 they would still weigh 37 % after 1,000 steps.
    """
    if decay <= 0:
        return None
    if not decay < 1:
        raise ConfigError(f"train.ema={decay} must be in [0, 1) (0 = off, e.g. 0.999)")
    return ModelEmaV3(model, decay=decay, use_warmup=True)
