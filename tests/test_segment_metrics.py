"""mIoU, per-class IoU and pixel accuracy on hand-built predictions with known answers."""

from __future__ import annotations

import pytest
import torch

from tasks.segment.metrics import ConfusionMatrix


def test_known_answer_with_void_and_absent_class():
    # ground truth / prediction, 255 = void; class 3 never appears in either
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])  # the void pixel's prediction must not count
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred, target)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 0] = 1, 1, 2, 1
    assert torch.equal(cm.matrix, expected)
    out = cm.compute(["bg", "a", "b", "c"])
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0 -> 0
    assert out["per_class_iou"]["bg"] == pytest.approx(1 / 3)
    assert out["per_class_iou"]["a"] == pytest.approx(2 / 3)
    assert out["per_class_iou"]["b"] == 0.0
    assert out["per_class_iou"]["c"] is None  # absent from GT and prediction: left out
    assert out["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert out["pixel_acc"] == pytest.approx(3 / 5)


def test_accumulates_over_batches_like_one_update():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 7, 9), generator=g)
    target[0, :2] = 255
    pred = torch.randint(0, 5, (4, 7, 9), generator=g)
    whole, parts = ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(pred, target)
    for p, t in zip(pred, target, strict=True):
        parts.update(p, t)
    assert torch.equal(whole.matrix, parts.matrix)
    assert whole.matrix.sum() == (target != 255).sum()


def test_perfect_prediction_and_bad_label():
    target = torch.tensor([0, 1, 1, 2])
    cm = ConfusionMatrix(3)
    cm.update(target.clone(), target)
    assert cm.compute()["mIoU"] == 1.0 and cm.compute()["pixel_acc"] == 1.0
    with pytest.raises(ValueError, match="label 7"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
