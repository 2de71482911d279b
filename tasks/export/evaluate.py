"""Accuracy and speed of an exported model on a validation folder (the int8 report).

Each task's own metric: classify top-1 (ImageFolder ``DIR/<class>/<image>``), segment mIoU
and detect COCO AP (the task's folder layouts, read with the training code's loaders).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tasks.base import Task
from tasks.images import DataError
from tasks.inference import OnnxModel


def spread(total: int, limit: int) -> list[int]:
    """Up to ``limit`` indices spread evenly over ``range(total)``. Why not the first
    ``limit``: folders list their images class by class (ImageFolder) or in file order, so
    the first 500 images of a 1,000-image CIFAR-10 folder held 5 of its 10 classes."""
    if total <= limit:
        return list(range(total))
    return [i * total // limit for i in range(limit)]


def _classify_listing(task: Task, folder: Path):  # noqa: ANN202 - tasks.classify.data's type
    """``folder``'s ImageFolder listing; a class the model does not know is a DataError."""
    from tasks.classify.data import scan_image_folder

    listing = scan_image_folder(folder, field="--val")
    unknown = sorted(set(listing.class_names) - set(task.class_names))
    if unknown:
        raise DataError(
            f"--val {str(folder)!r} has classes {unknown[:10]} the model does not know "
            f"(it knows {list(task.class_names)[:10]})"
        )
    return listing


def _classify(model: OnnxModel, task: Task, folder: Path, limit: int) -> float:
    listing = _classify_listing(task, folder)
    remap = [task.class_names.index(c) for c in listing.class_names]
    hits = 0
    pairs = [(listing.paths[i], listing.labels[i]) for i in spread(len(listing.paths), limit)]
    for i in range(0, len(pairs), 32):
        chunk = pairs[i : i + 32]
        for (_, label), res in zip(chunk, model([p for p, _ in chunk]), strict=False):
            hits += int(res["probs"].argmax()) == remap[label]
    return hits / max(len(pairs), 1)


def _val_task(task: Task, folder: Path) -> Task:
    """A copy of ``task`` reading ``folder`` as its validation data with the model's classes,
    so that labels are numbered as the model numbers them (a COCO file with other category
    ids, or a folder naming fewer classes, would otherwise renumber them)."""
    data = replace(task.cfg.data, train=str(folder), val=str(folder))
    clone = type(task)(replace(task.cfg, data=data))
    clone.class_names = list(task.class_names)
    return clone


def _segment(model: OnnxModel, task: Task, folder: Path, limit: int) -> float:
    from tasks.segment.metrics import ConfusionMatrix

    ds = _val_task(task, folder).build_val_dataset()  # labels beyond the classes: DataError
    cm = ConfusionMatrix(len(task.class_names), task.cfg.data.ignore_index)
    for i in spread(len(ds), limit):
        image, mask = ds.raw(i)
        pred = model(image)[0]["labels"]
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(mask.astype(np.int64)))
    return float(cm.compute(task.class_names)["mIoU"])


def _detect(model: OnnxModel, task: Task, folder: Path, limit: int) -> float:
    from tasks.detect.metrics import coco_evaluate, ground_truth_entry

    vt = _val_task(task, folder)
    ds = vt.build_val_dataset()
    gts, dets = [], []
    for i in spread(len(ds), limit):
        image, t = ds[i]
        res = model(image.permute(1, 2, 0).numpy())[0]
        gts.append(ground_truth_entry(i, image, t))
        dets.append(dict(image_id=i, **res))
    metrics, _ = coco_evaluate(gts, dets, task.class_names, vt.category_ids or None)
    return float(metrics["AP"])


METRICS = {
    "classify": ("top1", _classify),
    "segment": ("mIoU", _segment),
    "detect": ("AP", _detect),
}


EVAL_IMAGES = 500  # images of the --val folder scored at most (spread over all of it)


def evaluate_onnx(
    path: Path, task: Task, folder: str | Path, limit: int = EVAL_IMAGES
) -> tuple[str, float]:
    """``(metric name, value)`` of the ONNX model at ``path`` on up to ``limit`` images,
    spread evenly over the folder (``spread``)."""
    name, fn = METRICS[task.name]
    return name, fn(OnnxModel(path, provider="cpu"), task, check_folder(folder), limit)


def check_val_data(task: Task, folder: str | Path) -> None:
    """Read ``folder``'s listing as ``evaluate_onnx`` will (classes, annotations, masks), so
    the wrong kind of data is one error before the export, not after it."""
    folder = check_folder(folder)
    if task.name == "classify":
        _classify_listing(task, folder)
    else:
        _val_task(task, folder).build_val_dataset()


def check_folder(folder: str | Path) -> Path:
    """``folder`` as a Path; FileNotFoundError naming ``--val`` when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--val {str(folder)!r} is not a folder")
    return folder


def latency_ms(path: Path, shape: tuple[int, ...], dtype: type, runs: int = 20) -> float:
    """Median milliseconds of one CPU run of ``path`` on a random batch of ``shape``."""
    model = OnnxModel(path, provider="cpu")
    batch = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    model.run_batch(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run_batch(batch)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))
