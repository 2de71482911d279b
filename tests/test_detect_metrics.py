"""COCO evaluation through pycocotools on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.detect.metrics import coco_evaluate


def _gt(boxes, labels, crowd=None):
    crowd = np.zeros(len(labels), bool) if crowd is None else np.asarray(crowd)
    return [dict(image_id=1, width=100, height=100, boxes=np.asarray(boxes, float),
                 labels=np.asarray(labels), iscrowd=crowd)]  # fmt: skip


def _det(boxes, labels, scores=None):
    scores = np.ones(len(labels)) if scores is None else np.asarray(scores)
    return [
        dict(image_id=1, boxes=np.asarray(boxes, float), labels=np.asarray(labels), scores=scores)
    ]


def test_perfect_predictions_score_one():
    boxes = [[10, 10, 50, 50], [60, 60, 90, 95]]
    metrics, precision = coco_evaluate(_gt(boxes, [1, 2]), _det(boxes, [1, 2]), ["a", "b"], [3, 17])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP/a"] == pytest.approx(1.0) and metrics["AP/b"] == pytest.approx(1.0)
    assert precision.shape == (10, 101, 2, 4, 3)


def test_known_shift_gives_known_ap():
    # shifting a 10x10 box by 2 px gives IoU 80 / 120 = 0.667: a hit at IoU thresholds
    # 0.50, 0.55, 0.60, 0.65 and a miss at 0.70..0.95, so AP = 4 / 10, AP50 = 1, AP75 = 0
    metrics, _ = coco_evaluate(_gt([[0, 0, 10, 10]], [1]), _det([[2, 0, 12, 10]], [1]), ["a"])
    assert metrics["AP"] == pytest.approx(0.4)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(0.0)


def test_wrong_class_and_crowd_ignore():
    metrics, _ = coco_evaluate(_gt([[0, 0, 10, 10]], [1]), _det([[0, 0, 10, 10]], [2]), ["a", "b"])
    assert metrics["AP"] == pytest.approx(0.0)
    # a detection on an ignore region (VOC difficult) is neither a hit nor a false positive
    gt = _gt([[0, 0, 10, 10], [50, 50, 70, 70]], [1, 1], crowd=[False, True])
    det = _det([[0, 0, 10, 10], [50, 50, 70, 70]], [1, 1], scores=[0.5, 0.9])
    metrics, _ = coco_evaluate(gt, det, ["a"])
    assert metrics["AP"] == pytest.approx(1.0)


def test_no_detections_score_zero():
    metrics, _ = coco_evaluate(_gt([[0, 0, 10, 10]], [1]), _det(np.zeros((0, 4)), []), ["a"])
    assert metrics["AP"] == 0.0 and metrics["AP/a"] == 0.0


def test_no_ground_truth_is_undefined_not_zero():
    """A validation set without objects says nothing about the model: -1 (as COCOeval gives
    for an all-crowd set), not the 0.0 of a model that found nothing."""
    no_objects = _gt(np.zeros((0, 4)), [])
    for det in (_det(np.zeros((0, 4)), []), _det([[0, 0, 10, 10]], [1])):
        metrics, _ = coco_evaluate(no_objects, det, ["a"])
        assert metrics["AP"] == -1.0 and metrics["AP/a"] == -1.0
    all_crowd = _gt([[0, 0, 10, 10]], [1], crowd=[True])
    for det in (_det(np.zeros((0, 4)), []), _det([[0, 0, 10, 10]], [1])):
        metrics, _ = coco_evaluate(all_crowd, det, ["a"])
        assert metrics["AP"] == -1.0
    # class b has no objects: undefined whether or not anything was detected
    for det in (_det(np.zeros((0, 4)), []), _det([[0, 0, 10, 10]], [1])):
        metrics, _ = coco_evaluate(_gt([[0, 0, 10, 10]], [1]), det, ["a", "b"])
        assert metrics["AP/b"] == -1.0 and metrics["AP"] >= 0.0
