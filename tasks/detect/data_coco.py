"""COCO JSON detection annotations.

Layout (``data.train=DIR``): ``DIR/annotations.json`` or a single
``DIR/annotations/instances_*.json`` (``tasks.coco``); each ``file_name`` is looked up in
``DIR/images/``, next to the JSON, then in ``DIR``. Categories are sorted by id and numbered
1..K; the original ids are kept (``category_ids``) so results are written back with them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from tasks.coco import (
    CocoImage,
    annotation_refs,
    crowd_flag,
    entry_float,
    entry_value,
    find_coco_json,
    read_coco,
)
from tasks.detect.records import (
    AnnotationError,
    ImageRecord,
    check_pixel_units,
    file_id,
    label_of,
    make_record,
)


def _bbox(ann: dict[str, Any], where: str) -> list[float]:
    """``[x, y, width, height]`` as floats (``"12.5"`` accepted, as for ids and sizes);
    ``null`` coordinates become NaN (rejected, or dropped with data.fix_boxes, by
    ``check_boxes``)."""
    bbox = entry_value(ann, "bbox", where)
    if isinstance(bbox, list) and len(bbox) == 4:
        with contextlib.suppress(TypeError, ValueError):
            if not any(isinstance(v, (bool, list, dict)) for v in bbox):
                return [float("nan") if v is None else float(v) for v in bbox]
    raise AnnotationError(f"{where}: bbox is {bbox!r}, expected [x, y, width, height] numbers")


def _area(ann: dict[str, Any], where: str) -> float:
    """The annotation's ``area`` (COCO gives the mask's, which the small/medium/large AP
    ranges use), or NaN when it is missing or not positive (box-only exporters write 0): the
    box area then. Not a number is an error, as segmentation's reader says."""
    if ann.get("area") is None:
        return float("nan")
    area = entry_float(ann, "area", where)
    return area if area > 0 else float("nan")


def _check_unique_files(images: dict[int, CocoImage], src: str) -> None:
    """Two ``images`` entries naming one file (merged exports) would make it two samples,
    each with part of its boxes: the other part would be trained as background."""
    seen: dict[Hashable, int] = {}
    for image_id, im in images.items():  # links resolved: a link and its target are one file
        first = seen.setdefault(file_id(im.path.resolve()), image_id)
        if first != image_id:
            raise AnnotationError(
                f"{src}: images with id {first} and id {image_id} both name file "
                f"{str(im.path)!r} (expected one entry per image: merge them and point their "
                "annotations at one id)"
            )


def load_coco(
    root: Path, class_names: list[str] | None, *, fix: bool, split: str = ""
) -> tuple[list[ImageRecord], list[str], list[int]]:
    """-> (records, class names, category ids: label k has COCO id ``category_ids[k-1]``).

    With ``class_names`` given (the validation set), categories are matched by name and the
    returned category ids are this file's ids for those names. ``split``: see
    ``find_coco_json``.
    """
    json_path = find_coco_json(root, split)
    if json_path is None:
        raise FileNotFoundError(f"no COCO annotation file in {str(root)!r}")
    src = str(json_path)
    cats, coco_images, annotations = read_coco(json_path, root)
    own_names = [cats[k] for k in sorted(cats)]
    if class_names is None:
        class_names = own_names
    # only categories that annotations use must be classes: a validation file may list labels
    # of its project that no box has (CVAT, Label Studio export every label)
    cat_label = {k: class_names.index(n) + 1 if n in class_names else 0 for k, n in cats.items()}
    id_of_name = {name: k for k, name in cats.items()}
    unused = iter(range(max(cats) + 1, max(cats) + 1 + len(class_names)))
    # a training class this file lacks gets an id of its own (COCOeval needs distinct ids)
    category_ids = [
        id_of_name[name] if name in id_of_name else next(unused) for name in class_names
    ]
    _check_unique_files(coco_images, src)
    images = {
        image_id: dict(path=im.path, width=im.width, height=im.height, boxes=[], labels=[],
                       crowd=[], names=[], areas=[])
        for image_id, im in coco_images.items()
    }  # fmt: skip
    for i, ann in enumerate(annotations):
        where = f"{src} annotations[{i}]"
        image_id, cat = annotation_refs(ann, where, images, cat_label)
        if not cat_label[cat]:
            label_of(cats[cat], class_names, where=f"{where} (category_id {cat})")  # raises
        x, y, w, h = _bbox(ann, where)
        entry = images[image_id]
        entry["boxes"].append([x, y, x + w, y + h])
        entry["labels"].append(cat_label[cat])
        entry["crowd"].append(crowd_flag(ann, where))
        entry["areas"].append(_area(ann, where))
        entry["names"].append(f"annotation id {ann.get('id', '?')}, {cats[cat]}")
    check_pixel_units([b for e in images.values() for b in e["boxes"]], src)
    records = [
        make_record(
            e["path"],
            e["width"],
            e["height"],
            e["boxes"],
            e["labels"],
            e["crowd"],
            source=src,
            names=e["names"],
            fix=fix,
            image_id=image_id,
            areas=e["areas"],
        )
        for image_id, e in images.items()
    ]
    return records, class_names, category_ids
