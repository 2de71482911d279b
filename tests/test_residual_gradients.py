"""The gradient split dL/dx = shortcut + branch, and plain vs residual nets at initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from backbones import create_backbone
from tasks.residual.gradients import (
    ProbeClassifier,
    cross_entropy_loss,
    measure,
    random_batch,
    split_gradients,
)


def _splits(name: str, batch: int = 2, size: int = 32):
    torch.manual_seed(0)
    model = ProbeClassifier(create_backbone(name)).train()
    x, labels = random_batch(batch, size)
    return split_gradients(model, cross_entropy_loss(x, labels))


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "resnet18", "resnet20_plain"])
def test_shortcut_plus_branch_is_dl_dx(name: str) -> None:
    splits = _splits(name)
    kinds = {s.shortcut_kind for s in splits}
    for s in splits:
        assert s.grad_x.abs().max() > 0
        torch.testing.assert_close(s.branch + s.shortcut, s.grad_x, rtol=1e-4, atol=1e-9)
    if name.endswith("_plain"):
        assert kinds == {"none"}
        assert all(torch.equal(s.branch, s.grad_x) for s in splits)
    else:
        # resnet20: zero-pad shortcuts (option A); resnet18: 1x1 conv projections
        assert kinds == {"identity", "projection"}
        for s in splits:
            if s.shortcut_kind == "identity":  # the "1" in 1 + dF/dx: dL/dy passes unchanged
                assert torch.equal(s.shortcut, s.grad_sum)
            assert s.forward_ratio > 0


def test_plain_net_spreads_gradients_over_depth_far_more_than_its_residual_twin() -> None:
    """resnet56 vs resnet56_plain, same seed and batch, training-mode BN: the plain net's
    gradient at the first block differs from the last block's by ~6000x (it grows towards the
    input: BN nets explode rather than vanish), the residual net's by ~15x."""
    x, labels = random_batch(4, 32, seed=0)
    spread = {}
    for name in ("resnet56", "resnet56_plain"):
        torch.manual_seed(0)
        stats = measure(ProbeClassifier(create_backbone(name)), cross_entropy_loss(x, labels))
        assert len(stats) == 27
        spread[name] = abs(math.log10(stats[0].grad_x_rms / stats[-1].grad_x_rms))
    assert spread["resnet56_plain"] > 3.0
    assert spread["resnet56"] < 2.0
    assert spread["resnet56_plain"] > spread["resnet56"] + 1.5


def test_measure_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = ProbeClassifier(create_backbone("resnet20")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, cross_entropy_loss(*random_batch(2)))
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_timm_or_foreign_models_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no resvision residual blocks"):
        split_gradients(torch.nn.Linear(2, 2), lambda m: m(torch.ones(1, 2)).sum())
