"""COCO JSON files, as detection and segmentation both find and read them.

Layout: ``DIR/annotations.json``, ``DIR/_annotations.coco.json`` (Roboflow's export, images
beside it) or a single ``DIR/annotations/instances_*.json`` (the COCO download's names).
Files are read as UTF-8, with or without a byte-order mark (Windows tools write one);
anything else is one error naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.images import DataError, checked_size

JSON_NAMES = ("annotations.json", "_annotations.coco.json")  # then annotations/instances_*.json
# what find_coco_json looks for, as error messages name it
LAYOUTS = f"{', '.join(JSON_NAMES)} or annotations/instances_*.json"


def find_coco_json(root: Path, split: str = "") -> Path | None:
    """The annotation file of a COCO-layout folder, or None when there is none. Several
    ``annotations/instances_*.json`` (the COCO download: ``instances_train2017.json`` beside
    ``instances_val2017.json``): the one whose name holds ``split`` ("train" or "val")."""
    for name in JSON_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted((root / "annotations").glob("instances_*.json"))
    mine = [p for p in found if split and split in p.stem.removeprefix("instances_")]
    if len(found) > 1 and len(mine) != 1:
        raise FileNotFoundError(
            f"{str(root / 'annotations')!r} holds several COCO files "
            f"{[p.name for p in found]}, and not one named for the {split or 'wanted'} split; "
            "point data.train/data.val at folders with one each"
        )
    return (mine or found or [None])[0]


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


def entry_float(entry: dict[str, Any], key: str, where: str) -> float:
    """``entry[key]`` as a finite float (``"12.5"`` is accepted, as for ids)."""
    value = entry_value(entry, key, where)
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
            if math.isfinite(number):
                return number
        except ValueError:
            pass
    raise DataError(f"{where}: {key} is {value!r}, expected a number")


def entry_text(entry: dict[str, Any], key: str, where: str) -> str:
    """``entry[key]`` as non-empty text (a number is taken as its text: class "5"); ``null``,
    ``""``, lists and objects are a DataError (a class or file called "None" is a typo's
    result, never the user's intent)."""
    value = entry_value(entry, key, where)
    if not isinstance(value, bool) and isinstance(value, (str, int, float)):
        text = str(value)
        if text.strip():
            return text
    raise DataError(f"{where}: {key} is {json.dumps(value)}, expected a non-empty name")


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
    """An entry's ``file_name`` looked up in ``root/images``, next to the JSON, in ``root``,
    then (the COCO download: ``annotations/instances_val2017.json`` beside ``val2017/``) in
    ``root/<split>``, with ``\\`` read as ``/`` too; not found is a FileNotFoundError naming
    them."""
    bases = [root / "images", json_path.parent, root]
    if json_path.stem.startswith("instances_"):
        bases.append(root / json_path.stem.removeprefix("instances_"))
    bases = list(dict.fromkeys(bases))  # the JSON often sits in root: name each folder once
    # a file written on Windows may spell sub-folders with backslashes
    spellings = dict.fromkeys((file_name, file_name.replace("\\", "/")))
    for base in bases:
        for name in spellings:
            if (base / name).is_file():
                return base / name
    raise FileNotFoundError(
        f"{where}: image {file_name!r} is listed but not found in any of {[str(b) for b in bases]}"
    )


def image_size(img: dict[str, Any], path: Path, where: str) -> tuple[int, int]:
    """(width, height) of an ``images`` entry, checked against the image file's header
    (``checked_size``); from the file itself (as displayed, EXIF-turned) when the entry
    leaves them out or gives 0, as some exporters do."""
    declared = None
    if "width" in img or "height" in img:
        width, height = entry_int(img, "width", where), entry_int(img, "height", where)
        if width > 0 and height > 0:  # tools write 0 when they could not read the image
            declared = (width, height)
    return checked_size(path, declared, where)


@dataclass
class CocoImage:
    """One ``images`` entry: its file and (width, height) in pixels."""

    path: Path
    width: int
    height: int


def _unused_groups(
    cats: dict[int, str], supercategories: dict[int, Any], annotations: list[Any]
) -> list[int]:
    """Ids of categories that only name a group: another category's ``supercategory`` and
    used by no annotation. Roboflow's exports start with one (``{"id": 0, "name": "cells",
    "supercategory": "none"}`` above ``{"id": 1, "name": "cell", "supercategory": "cells"}``);
    kept, it would become a class no image has. The COCO download's own supercategories
    ("vehicle") are not categories, and "person" naming itself is no group."""
    groups = {str(sup) for k, sup in supercategories.items() if sup not in (None, cats[k])}
    if not groups.intersection(cats.values()):
        return []
    used = set()
    for ann in annotations:
        with contextlib.suppress(DataError):  # reported where the annotation is read
            used.add(entry_int(ann, "category_id", "annotation"))
    return [k for k, name in cats.items() if name in groups and k not in used]


def read_coco(
    json_path: Path, root: Path
) -> tuple[dict[int, str], dict[int, CocoImage], list[dict[str, Any]]]:
    """``(categories {id: name}, images {id: CocoImage}, raw annotations)`` of a COCO file,
    checked: the three keys present, integer ids, no id or category name twice (either
    would silently drop an image or merge two classes), at least one category, every image
    file found (see ``resolve_image``). Categories that only group others and are never
    used are left out (``_unused_groups``)."""
    src = str(json_path)
    data = read_coco_json(json_path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(entry_value(data, key, src), list):
            found = json.dumps(data[key])[:40]  # as the file spells it: null, "abc", {...}
            raise DataError(f"{src}: {key!r} is {found}, expected a list")
    cats: dict[int, str] = {}
    supercategories: dict[int, Any] = {}
    for i, c in enumerate(data["categories"]):
        where = f"{src} categories[{i}]"
        cat_id, name = entry_int(c, "id", where), entry_text(c, "name", where)
        if cat_id in cats:
            raise DataError(f"{where}: id {cat_id} repeats (expected one entry per id)")
        if name in cats.values():
            raise DataError(
                f"{where}: name {name!r} repeats (expected one category per name: classes "
                "are matched by name)"
            )
        cats[cat_id], supercategories[cat_id] = name, c.get("supercategory")
    if not cats:
        raise DataError(f"{src}: 'categories' is empty (expected the object classes)")
    for cat_id in _unused_groups(cats, supercategories, data["annotations"]):
        del cats[cat_id]
    images: dict[int, CocoImage] = {}
    for i, img in enumerate(data["images"]):
        where = f"{src} images[{i}]"
        image_id = entry_int(img, "id", where)
        if image_id in images:
            raise DataError(
                f"{where}: id {image_id} repeats (expected a unique id per image: annotations "
                "find their image by it)"
            )
        path = resolve_image(root, json_path, entry_text(img, "file_name", where), where)
        images[image_id] = CocoImage(path, *image_size(img, path, where))
    return cats, images, list(data["annotations"])
