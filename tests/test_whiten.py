"""Patch-whitening of the first conv (``backbones/whiten.py``) and ``model.whiten_stem``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.whiten import first_conv, whiten_conv_
from tasks import TASKS
from tasks.config import ConfigError, load_config
from tasks.engine import Trainer


def correlated_images(n: int = 64, size: int = 12) -> torch.Tensor:
    """``[n, 3, size, size]`` whose neighbouring pixels and channels are correlated."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return torch.einsum("dc,nchw->ndhw", mix, F.avg_pool2d(x, 3, 1, 1) * 3 + 0.3 * x)


def test_whitened_conv_decorrelates_the_patches_and_is_frozen():
    images = correlated_images()
    conv = nn.Conv2d(3, 24, 3, bias=False)
    whiten_conv_(conv, images, eps=0.0)
    out = conv(images)  # [n, 24, 10, 10]
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(half.T @ half / len(half), torch.eye(12), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])  # each direction and its negative
    assert not conv.weight.requires_grad
    # the kept directions are those of largest variance: the raw patches' projection on the
    # first filter has more variance than on the last kept one
    patches = F.unfold(images, 3).transpose(1, 2).reshape(-1, 27)
    w = conv.weight[:12].reshape(12, 27)
    w = w / w.norm(dim=1, keepdim=True)
    variances = (patches @ w.T).pow(2).mean(0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-4)


@pytest.mark.parametrize("out_channels", [7, 56])
def test_a_conv_that_cannot_be_whitened_says_why(out_channels):
    with pytest.raises(ValueError, match="cannot be whitened: expected an even number"):
        whiten_conv_(nn.Conv2d(3, out_channels, 3), correlated_images())


def _cfg(*overrides: str):
    return load_config(
        TASKS.get("classify").config_class,
        None,
        [
            "model.backbone=fast_cifar_s", "model.whiten_stem=true", "data.image_size=16",
            "data.synthetic_train_per_class=16", "data.synthetic_val_per_class=4",
            "train.epochs=1", "train.batch_size=32", "train.checkpoint_minutes=0",
            *overrides,
        ],
    )  # fmt: skip


def test_whiten_stem_trains_with_the_stem_fixed(tmp_path):
    """The engine whitens the stem from the training images before the first step; training
    leaves it as it was while the rest of the net moves."""
    torch.set_num_threads(1)
    task = TASKS.create("classify", cfg=_cfg())
    trainer = Trainer(task, tmp_path / "run", quiet=True)
    stem = first_conv(trainer.model.backbone)
    whitened = stem.weight.detach().clone()
    x = (trainer.train_set.images.float() - trainer.model.mean) / trainer.model.std
    expected = nn.Conv2d(3, 24, 3, bias=False)
    whiten_conv_(expected, x)
    torch.testing.assert_close(whitened, expected.weight)
    other = trainer.model.backbone.layer1.conv1.weight.detach().clone()
    trainer.train()
    assert torch.equal(stem.weight, whitened)
    assert not torch.equal(trainer.model.backbone.layer1.conv1.weight, other)


def test_whiten_stem_with_backbone_weights_is_a_config_error():
    with pytest.raises(ConfigError, match="model.whiten_stem=true .* set one of the two"):
        TASKS.create("classify", cfg=_cfg("model.backbone_weights=w.safetensors"))


def test_whiten_stem_on_a_stem_it_cannot_whiten_names_the_backbone(monkeypatch):
    monkeypatch.setattr("tasks.classify.task.first_conv", lambda backbone: nn.Conv2d(3, 7, 3))
    task = TASKS.create("classify", cfg=_cfg())
    train_set, _ = task.build_datasets()
    with pytest.raises(ConfigError, match="model.backbone='fast_cifar_s'.*cannot be whitened"):
        task.prepare_model(task.build_model(), train_set)
