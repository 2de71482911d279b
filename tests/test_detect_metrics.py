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


def test_per_class_ap_follows_labels_when_category_ids_do_not_grow_with_them():
    """A val COCO file may number the training classes otherwise (a: id 11, b: id 5);
    COCOeval sorts its category ids, and the per-class AP and precision curves must still
    be those of each label, not of the label at that sorted position."""
    gt = _gt([[0, 0, 10, 10], [50, 50, 70, 70]], [1, 2])
    det = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])  # a found, b missed
    metrics, precision = coco_evaluate(gt, det, ["a", "b"], [11, 5])
    assert metrics["AP/a"] == pytest.approx(1.0) and metrics["AP/b"] == pytest.approx(0.0)
    # label 1 (a): precision 1 at every recall and IoU; label 2 (b): 0
    np.testing.assert_allclose(precision[:, :, 0, 0, -1], 1.0)
    np.testing.assert_allclose(precision[:, :, 1, 0, -1], 0.0)


def test_no_detections_give_cocoevals_values():
    """No detection at all: pycocotools' own answer, -1 for the area ranges without ground
    truth (one 10x10 box is "small": APm and APl are undefined), 0 where objects were missed."""
    metrics, precision = coco_evaluate(_gt([[0, 0, 10, 10]], [1]), _det(np.zeros((0, 4)), []),
                                       ["a", "b"])  # fmt: skip
    assert metrics["AP"] == 0.0 and metrics["APs"] == 0.0 and metrics["ARs"] == 0.0
    assert metrics["APm"] == -1.0 and metrics["APl"] == -1.0 and metrics["ARl"] == -1.0
    assert metrics["AP/a"] == 0.0 and metrics["AP/b"] == -1.0
    assert precision.shape == (10, 101, 2, 4, 3)


def test_precision_recall_plot_of_many_classes_names_the_best_and_worst(tmp_path, monkeypatch):
    import warnings

    import tasks.plots
    from tasks.detect.draw import plot_precision_recall

    drawn = []  # the legend's entries of each figure saved
    save = tasks.plots.save_figure

    def save_and_record(fig, *args, **kwargs):
        drawn.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(tasks.plots, "save_figure", save_and_record)
    k = 80
    precision = np.full((10, 101, k, 4, 3), -1.0)
    precision[0, :, :, 0, -1] = np.linspace(0, 1, k)  # class i: flat precision i / 79
    precision[0, :, 5, 0, -1] = -1  # a class without ground truth: no curve
    names = [f"c{i}" for i in range(k)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "tight layout not applied" included
        assert plot_precision_recall(precision, names, tmp_path / "pr.png").is_file()
    assert drawn[0] == [f"c{i} (AP50 {i / 79:.2f})" for i in (79, 78, 77, 76, 75, 4, 3, 2, 1, 0)]
    plot_precision_recall(precision[:, :, :3], names[:3], tmp_path / "pr3.png")
    assert drawn[1] == ["c2 (AP50 0.03)", "c1 (AP50 0.01)", "c0 (AP50 0.00)"]
