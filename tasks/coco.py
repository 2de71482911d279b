"""COCO JSON files, as detection and segmentation both find and read them.

Layout: ``DIR/annotations.json``, ``DIR/_annotations.coco.json`` (Roboflow's export, images
beside it) or a single ``DIR/annotations/instances_*.json`` (the COCO download's names).
Files are read as UTF-8, with or without a byte-order mark (Windows tools write one);
anything else is one error naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tasks.images import DataError, displayed_size


def find_coco_json(root: Path) -> Path | None:
    """The annotation file of a COCO-layout folder, or None when there is none."""
    for name in ("annotations.json", "_annotations.coco.json"):
        if (root / name).is_file():
            return root / name
    found = sorted((root / "annotations").glob("instances_*.json"))
    if len(found) > 1:
        raise FileNotFoundError(
            f"{str(root / 'annotations')!r} holds several COCO files "
            f"{[p.name for p in found]}; point data.train/data.val at folders with one each"
        )
    return found[0] if found else None


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed file; a file that is not UTF-8 JSON raises DataError naming it."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{str(path)}: not UTF-8 text ({err}); save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{str(path)}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)}: holds a {type(data).__name__}, expected a COCO object")
    return data


def entry_value(entry: dict[str, Any], key: str, where: str) -> Any:
    """``entry[key]``; a missing key (or an entry that is not an object) is a DataError naming
    ``where`` (file and entry, e.g. ``annotations.json annotations[3]``)."""
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{where}: missing key {key!r} (expected a COCO entry with it)")
    return entry[key]


def entry_int(entry: dict[str, Any], key: str, where: str) -> int:
    """``entry[key]`` as an int; COCO ids and sizes are integers (``"3"`` is accepted)."""
    value = entry_value(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        value = None
    try:
        number = float(value)  # type: ignore[arg-type]
        if number.is_integer():
            return int(number)
    except (TypeError, ValueError):
        pass
    raise DataError(f"{where}: {key} is {entry[key]!r}, expected an integer")


def annotation_refs(
    ann: dict[str, Any], where: str, image_ids: Collection[int], category_ids: Collection[int]
) -> tuple[int, int]:
    """``(image_id, category_id)`` of an annotation, both checked to exist in the file."""
    image_id, cat = entry_int(ann, "image_id", where), entry_int(ann, "category_id", where)
    if image_id not in image_ids:
        raise DataError(f"{where}: image_id {image_id} is not in 'images'")
    if cat not in category_ids:
        raise DataError(
            f"{where}: category_id {cat} is not in 'categories' (expected one of "
            f"{sorted(category_ids)})"
        )
    return image_id, cat


def crowd_flag(ann: dict[str, Any], where: str) -> bool:
    """``ann["iscrowd"]`` (default 0) as a bool; 0/1 as numbers or strings."""
    value = ann.get("iscrowd", 0)
    if value in (0, 1, "0", "1"):  # True/False compare equal to 1/0
        return bool(int(value))
    raise DataError(f"{where}: iscrowd is {value!r}, expected 0 or 1")


def resolve_image(root: Path, json_path: Path, file_name: str, where: str) -> Path:
    """An entry's ``file_name`` looked up in ``root/images``, next to the JSON, then in
    ``root``; not found is a FileNotFoundError naming all three."""
    for base in (root / "images", json_path.parent, root):
        if (base / file_name).is_file():
            return base / file_name
    raise FileNotFoundError(
        f"{where}: image {file_name!r} is listed but not found in {str(root / 'images')!r}, "
        f"{str(json_path.parent)!r} or {str(root)!r}"
    )


def image_size(img: dict[str, Any], path: Path, where: str) -> tuple[int, int]:
    """(width, height) of an ``images`` entry; from the image file itself (as displayed,
    EXIF-turned) when the entry leaves them out, as some exporters do."""
    if "width" not in img and "height" not in img:
        return displayed_size(path)
    return entry_int(img, "width", where), entry_int(img, "height", where)
