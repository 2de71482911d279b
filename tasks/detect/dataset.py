"""Detection datasets: annotated folders (COCO / VOC / VOCdevkit) and synthetic shapes.

Every item is ``(image, target)``: image uint8 Tensor[3, H, W]; target ``boxes`` float32
[N, 4] x1y1x2y2 pixels, ``labels`` int64 [N] (1-based), ``iscrowd`` bool [N] (ignore
regions), ``area`` float32 [N] (the annotation's own area for COCO's small/medium/large
ranges, NaN = the box's; always NaN once augmented), ``image_id`` int64 scalar. N may be 0:
an image without objects is a valid sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.augment import seeded
from tasks.coco import LAYOUTS as COCO_LAYOUTS
from tasks.coco import find_coco_json
from tasks.detect.data_coco import load_coco
from tasks.detect.data_voc import is_vocdevkit, load_voc_folder, load_vocdevkit, voc_split
from tasks.detect.records import AnnotationError, ImageRecord
from tasks.images import read_image_rgb, swapped_size_hint
from tasks.shapes import SHAPE_CLASSES, make_shapes_sample

Target = dict[str, Tensor]


def load_detection_folder(
    root: str | Path,
    *,
    field: str,
    class_names: list[str] | None,
    fix: bool,
    separate_val_dir: bool = False,
) -> tuple[list[ImageRecord], list[str], list[int]]:
    """Reads any supported layout -> (records, class names, COCO category id per label).

    ``field`` ("data.train" / "data.val") only names the setting in errors; it also picks
    the VOCdevkit split (see ``data_voc.voc_split``). ``class_names`` None = take them from
    this folder (training set); otherwise labels outside them are errors.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{field}={str(root)!r} is not a directory")
    split = "train" if field == "data.train" else "val"
    if find_coco_json(root, split) is not None:
        return load_coco(root, class_names, fix=fix, split=split)
    if (root / "annotations").is_dir() and (root / "images").is_dir():
        records, names = load_voc_folder(root, class_names, fix=fix, field=field)
    elif is_vocdevkit(root):
        split = voc_split(root, train=field == "data.train", separate_val_dir=separate_val_dir)
        records, names = load_vocdevkit(root, split, class_names, fix=fix)
    else:
        raise FileNotFoundError(
            f"{field}={str(root)!r}: no detection data found (expected {COCO_LAYOUTS} (COCO), "
            "images/ + annotations/*.xml (VOC), or JPEGImages/ + Annotations/ + ImageSets/Main/ "
            "(VOCdevkit))" + _layout_hint(root)
        )
    return records, names, list(range(1, len(names) + 1))


def _layout_hint(root: Path) -> str:
    """What in an unrecognised folder looks like detection data under another name: the
    COCO JSON of FiftyOne (``labels.json``), Label Studio (``result.json``) and others, or a
    VOCdevkit year folder one level down (``VOCdevkit/VOC2012``)."""
    jsons = sorted(p.name for p in root.glob("*.json") if not p.name.startswith("."))
    if jsons:
        return (
            f"; it holds {', '.join(jsons)}: if that is a COCO file, rename it to "
            "annotations.json, its images in images/ or beside it (FiftyOne's are in data/)"
        )
    years = sorted(p.name for p in root.iterdir() if p.is_dir() and is_vocdevkit(p))
    if years:
        return f"; it holds VOCdevkit folder(s) {', '.join(years)}: point the setting at one"
    return ""


def _to_item(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    image_id: int,
    augment: A.Compose | None,
    areas: np.ndarray | None = None,
) -> tuple[Tensor, Target]:
    if augment is not None:
        out = seeded(augment, image=image, bboxes=boxes, labels=labels, iscrowd=iscrowd)
        image, boxes = out["image"], np.asarray(out["bboxes"], dtype=np.float32)
        labels, iscrowd = np.asarray(out["labels"]), np.asarray(out["iscrowd"])
        areas = None  # crops and scales change the areas: the boxes' own from here
    if areas is None:
        areas = np.full(len(labels), np.nan, dtype=np.float32)
    target = dict(
        boxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        iscrowd=torch.as_tensor(iscrowd, dtype=torch.bool).reshape(-1),
        area=torch.as_tensor(areas, dtype=torch.float32).reshape(-1),
        image_id=torch.tensor(image_id, dtype=torch.int64),
    )
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), target


class DetectionDataset(Dataset):
    """Images decoded lazily from ``records``; ``augment`` applied when given."""

    def __init__(self, records: Sequence[ImageRecord], augment: A.Compose | None = None) -> None:
        self.records = list(records)
        self.augment = augment
        self.fixed = sum(r.fixed for r in self.records)  # boxes changed by data.fix_boxes

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        r = self.records[index]
        image = read_image_rgb(r.path)
        if image.shape[:2] != (r.height, r.width):
            raise AnnotationError(
                f"{r.source}: image {str(r.path)!r} is declared {r.width}x{r.height} but "
                f"decodes to {image.shape[1]}x{image.shape[0]} (expected equal sizes)"
                + swapped_size_hint(image.shape, (r.height, r.width))
            )
        return _to_item(
            image, r.boxes, r.labels, r.iscrowd, r.image_id, self.augment, areas=r.areas
        )


class ShapesDataset(Dataset):
    """``count`` synthetic shapes images (``tasks.shapes``), generated once and cached."""

    class_names = list(SHAPE_CLASSES)

    def __init__(
        self, count: int, *, seed: int, size: int, augment: A.Compose | None = None
    ) -> None:
        self.count, self.seed, self.size, self.augment = count, seed, size, augment
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.fixed = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if index not in self._cache:
            s = make_shapes_sample(index, seed=self.seed, size=self.size)
            self._cache[index] = (s.image, s.boxes, s.labels)
        image, boxes, labels = self._cache[index]
        crowd = np.zeros(len(labels), dtype=bool)
        return _to_item(image, boxes, labels, crowd, index + 1, self.augment)


def collate(samples: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Images keep their own sizes: a batch is (list of images, list of targets)."""
    return [s[0] for s in samples], [s[1] for s in samples]
