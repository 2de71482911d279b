"""COCO box metrics through pycocotools, on in-memory ground truth and detections.

``AP`` is the COCO mean over IoU 0.50:0.95 (the primary metric: it rewards tight boxes,
which AP50 does not); all values are fractions in 0..1, ``-1`` where pycocotools has no
ground truth to score (e.g. ``APl`` when no object is large).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SUMMARY_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)  # fmt: skip  - COCOeval.stats order


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()


def ground_truth_entry(image_id: int, image: Any, target: dict[str, Any]) -> dict[str, Any]:
    """``coco_evaluate``'s ground truth for one dataset item: ``image`` [3, H, W] and its
    target (``boxes``, ``labels``, ``iscrowd``, ``area`` tensors, see ``tasks.detect.dataset``)."""
    return dict(
        image_id=image_id,
        width=image.shape[-1],
        height=image.shape[-2],
        **{k: target[k].cpu().numpy() for k in ("boxes", "labels", "iscrowd", "area")},
    )


def coco_evaluate(
    ground_truth: Sequence[dict[str, Any]],
    detections: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """COCO bbox evaluation.

    ground_truth: per image ``image_id`` int, ``width``, ``height``, ``boxes`` [N, 4] x1y1x2y2,
        ``labels`` [N] (1-based), optional ``iscrowd`` [N] (ignore regions), optional ``area``
        [N] (what COCOeval's small/medium/large ranges read, as a COCO file's ``area``: its
        mask area; NaN or missing = the box area).
    detections: per image ``image_id``, ``boxes`` [K, 4], ``scores`` [K], ``labels`` [K].
    category_ids: COCO id of each label (``category_ids[label - 1]``); default 1..K. Results
        are scored under these ids, so non-contiguous datasets keep their own numbering.

    Returns ``(metrics, precision)``: metrics has ``SUMMARY_KEYS`` and ``AP/<class>`` for
    each class (-1 where undefined: no ground truth); precision is COCOeval's array
    [T=10 IoUs, R=101 recalls, K, A=4 areas, M=3 max-dets] (-1 where undefined), for
    precision-recall plots.
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    images, annotations, results = [], [], []
    for gt in ground_truth:
        images.append(
            dict(id=int(gt["image_id"]), width=int(gt["width"]), height=int(gt["height"]))
        )
        crowd = gt.get("iscrowd", np.zeros(len(gt["labels"]), dtype=bool))
        given = gt.get("area", np.full(len(gt["labels"]), np.nan))
        for box, label, c, area in zip(
            _xywh(gt["boxes"]),
            np.asarray(gt["labels"]),
            np.asarray(crowd),
            np.asarray(given, dtype=np.float64).reshape(-1),
            strict=True,
        ):
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=int(gt["image_id"]),
                    category_id=ids[int(label) - 1],
                    bbox=box,
                    area=float(area) if np.isfinite(area) and area > 0 else box[2] * box[3],
                    iscrowd=int(bool(c)),
                )
            )
    for det in detections:
        for box, score, label in zip(
            _xywh(det["boxes"]), det["scores"], det["labels"], strict=True
        ):
            results.append(
                dict(
                    image_id=int(det["image_id"]),
                    category_id=ids[int(label) - 1],
                    bbox=box,
                    score=float(score),
                )
            )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = dict(
            images=images,
            annotations=annotations,
            categories=[dict(id=i, name=n) for i, n in zip(ids, class_names, strict=True)],
        )
        coco.createIndex()
        if results:
            found = coco.loadRes(results)
        else:  # loadRes cannot read an empty list; COCOeval scores an empty result set itself
            found = COCO()  # (-1 where nothing is to be found: APl with no large object)
            found.dataset = dict(images=images, annotations=[], categories=[])
            found.createIndex()
        evaluator = COCOeval(coco, found, iouType="bbox")
        evaluator.params.catIds = ids
        evaluator.evaluate()  # sorts params.catIds: precision's K axis is in id order
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {k: float(v) for k, v in zip(SUMMARY_KEYS, evaluator.stats, strict=True)}
    # back to label order (ids need not grow with the label: a val file numbering its classes
    # otherwise than the training file), so that K index k is label k + 1 for every caller
    order = [list(evaluator.params.catIds).index(i) for i in ids]
    precision = evaluator.eval["precision"][:, :, order]
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]  # all IoUs, all recalls, area "all", 100 detections
        metrics[f"AP/{name}"] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return metrics, precision
