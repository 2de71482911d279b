"""PASCAL VOC XML annotations: a plain folder or a VOCdevkit year folder.

Layouts (``data.train=DIR``):

* ``DIR/images/`` + ``DIR/annotations/*.xml``: one XML per image; the image is
  ``images/<filename>`` from the XML, else the image in ``images/`` with the XML's stem
  (two such images, ``x.jpg`` and ``x.png``, are an error: the boxes fit one of them).
  Sub-folders pair by path, as segmentation's ``images/`` + ``masks/`` and a COCO
  ``file_name`` of ``a/x.jpg`` do: ``annotations/a/x.xml`` annotates ``images/a/x.jpg``.
* VOCdevkit (``DIR/JPEGImages``, ``DIR/Annotations``, ``DIR/ImageSets/Main/<split>.txt``):
  the image list comes from the split file, see ``voc_split``.

Class names are the sorted set of ``<name>`` values in the training data (``Person`` and
``person`` are two classes, with a printed note). ``<difficult>1``
(or ``true``) objects become ``iscrowd`` ignore regions: evaluation neither rewards nor
penalises detecting them (VOC's rule), and they are not training targets. ``.XML`` files and
namespaced ``<annotation xmlns=...>`` roots are read too; two XML files naming one image are
an error (a copied XML whose ``<filename>`` was not updated).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from tasks.data import read_name_list
from tasks.detect.records import (
    AnnotationError,
    ImageRecord,
    check_pixel_units,
    file_id,
    label_of,
    make_record,
)
from tasks.images import checked_size, displayed_size, image_files, is_hidden, walk


@dataclass
class _VocObject:
    name: str
    box: list[float]
    difficult: bool


def _text(node: ET.Element, key: str, where: str) -> str:
    found = node.find(key)
    if found is None or found.text is None or not found.text.strip():
        raise AnnotationError(f"{where}: missing <{key}> (expected a VOC annotation with it)")
    return found.text.strip()


def _number(node: ET.Element, key: str, where: str) -> float:
    text = _text(node, key, where)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{where}: <{key}> is {text!r}, expected a number") from None


def _parse(xml_path: Path) -> tuple[str | None, tuple[int, int] | None, list[_VocObject]]:
    """(filename or None, (width, height) or None, objects) of one VOC XML file."""
    where = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{where}: not valid XML ({err})") from None
    for node in root.iter():  # <annotation xmlns="..."> (some exporters): plain tag names
        node.tag = node.tag.rpartition("}")[2]
    if root.tag != "annotation":
        raise AnnotationError(f"{where}: root element is <{root.tag}>, expected <annotation>")
    filename = root.findtext("filename")
    size = root.find("size")
    wh = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        wh = (int(_number(size, "width", where)), int(_number(size, "height", where)))
        if min(wh) <= 0:  # tools write 0x0 when they could not read the image
            wh = None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        at = f"{where} object {i}"
        box_node = obj.find("bndbox")
        if box_node is None:
            raise AnnotationError(f"{at}: missing <bndbox> (expected xmin, ymin, xmax, ymax)")
        # VOC pixel indices are 1-based and inclusive (the devkit's): xmin=1 is the first
        # column -> x1=0, and xmax=W (the last column, inclusive) is the edge x2=W, as
        # detectron2's load_voc_instances reads them (xmin-1, ymin-1, xmax, ymax); so a COCO
        # [x, y, w, h] box converted to VOC as [x+1, y+1, x+w, y+h] reads back unchanged.
        # (mmdetection subtracts 1 from all four for its old inclusive-x2 boxes; torchvision's
        # VOCDetection returns the raw strings.)
        box = [_number(box_node, k, at) for k in ("xmin", "ymin", "xmax", "ymax")]
        box = [box[0] - 1, box[1] - 1, box[2], box[3]]
        difficult = _flag(obj, "difficult", at)
        objects.append(_VocObject(_text(obj, "name", at), box, difficult))
    check_pixel_units([[o.box[0] + 1, o.box[1] + 1, *o.box[2:]] for o in objects], where)
    return (filename.strip() if filename else None), wh, objects


def _flag(node: ET.Element, key: str, where: str) -> bool:
    """A 0/1 field such as <difficult> (absent: 0); "true"/"false" as some tools write."""
    text = (node.findtext(key) or "0").strip().lower()
    if text not in ("0", "1", "true", "false"):
        raise AnnotationError(f"{where}: <{key}> is {text!r}, expected 0, 1, true or false")
    return text in ("1", "true")


def _find_image(
    images_dir: Path,
    filename: str | None,
    stem: str,
    where: str,
    by_stem: dict[str, list[Path]],
    sub: Path = Path(),
) -> Path:
    """The image of the XML ``<sub>/<stem>.xml``: ``images_dir/<sub>/<filename>``, else
    ``images_dir/<filename>`` (a ``<filename>`` that spells the sub-folder), else the one
    image named ``<stem>.<ext>`` in ``images_dir/<sub>`` (``by_stem``: ``_images_by_stem`` of
    that folder); two such images (``x.jpg`` and ``x.png``) are an error rather than a silent
    pick."""
    if filename:
        for path in dict.fromkeys((images_dir / sub / filename, images_dir / filename)):
            if path.is_file():
                return path
    images_dir = images_dir / sub
    found: dict[Hashable, Path] = {}  # x.jpg and x.JPG: one file on a case-insensitive disk
    for path in by_stem.get(stem, ()):  # any spelling of the extension: x.Jpg, x.JPEG
        found.setdefault(file_id(path), path)
    if len(found) > 1:
        names = sorted(p.name for p in found.values())
        why = f"image {filename!r} not found" if filename else "no <filename>"
        raise AnnotationError(
            f"{where}: {why}, and {len(names)} images in {str(images_dir)!r} match its stem "
            f"({', '.join(names)}): expected one (set <filename> or remove the others)"
        )
    if found:
        return next(iter(found.values()))
    raise FileNotFoundError(
        f"{where}: image {filename or stem!r} not found in {str(images_dir)!r} (expected "
        f"<filename> or an image named {stem}.<ext> there)"
    )


def _images_by_stem(images_dir: Path) -> dict[str, list[Path]]:
    """Image files directly in ``images_dir`` by stem, whatever their extension's case
    (``x.Jpg``, ``x.JPEG``): listed once per load, not probed per XML and extension."""
    by_stem: dict[str, list[Path]] = {}
    if images_dir.is_dir():
        for path in image_files(images_dir, recursive=False):
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def _records(
    xml_paths: list[Path],
    images_dir: Path,
    class_names: list[str] | None,
    fix: bool,
    xml_root: Path | None = None,
) -> tuple[list[ImageRecord], list[str]]:
    """``xml_root``: the folder the XMLs lie below; an XML in its sub-folder ``a/`` looks for
    its image in ``images_dir/a/`` first (``_find_image``). None: flat (VOCdevkit)."""
    parsed = [(p, *_parse(p)) for p in xml_paths]
    if class_names is None:
        class_names = sorted({o.name for *_, objects in parsed for o in objects})
        _note_case_twins(class_names)
    records = []
    annotated_by: dict[Hashable, Path] = {}  # image file -> its XML
    by_stem: dict[Path, dict[str, list[Path]]] = {}  # per sub-folder, listed once
    for image_id, (xml_path, filename, wh, objects) in enumerate(parsed, start=1):
        where = str(xml_path)
        sub = xml_path.parent.relative_to(xml_root) if xml_root else Path()
        if sub not in by_stem:
            by_stem[sub] = _images_by_stem(images_dir / sub)
        path = _find_image(images_dir, filename, xml_path.stem, where, by_stem[sub], sub)
        first = annotated_by.setdefault(file_id(path), xml_path)
        if first != xml_path:  # an XML copied from another keeps the old <filename>
            stale, other = (xml_path, first) if xml_path.stem != path.stem else (first, xml_path)
            raise AnnotationError(
                f"{str(stale)}: <filename> names image {str(path)!r}, which {str(other)!r} "
                f"annotates too (expected one XML per image: fix {stale.name}'s <filename>)"
            )
        wh = checked_size(path, wh, f"{where} <size>")
        records.append(
            make_record(
                path,
                wh[0],
                wh[1],
                [o.box for o in objects],
                [label_of(o.name, class_names, where=where) for o in objects],
                [o.difficult for o in objects],
                source=where,
                names=[o.name for o in objects],
                fix=fix,
                image_id=image_id,
            )
        )
    return records, class_names


def load_voc_folder(
    root: Path, class_names: list[str] | None, *, fix: bool, field: str
) -> tuple[list[ImageRecord], list[str]]:
    """``root/images`` + ``root/annotations/*.xml`` -> (records, class names); sub-folders
    of both are read, paired by path (``annotations/a/x.xml`` <-> ``images/a/x.jpg``).

    An image with no XML is an image without objects (LabelImg writes no file for those),
    in a sub-folder too; ``field`` names the setting in the note that says how many there
    were."""
    folder = root / "annotations"
    xml_paths = sorted(
        p for p in walk(folder)
        if p.suffix.lower() == ".xml" and p.is_file() and not is_hidden(p, folder)
    )  # fmt: skip
    if not xml_paths:
        jsons = sorted(p.name for p in folder.glob("*.json"))
        hint = (
            f" (it holds {', '.join(jsons)}: a COCO file there is read as "
            "annotations/instances_<anything>.json, e.g. instances_train.json)"
            if jsons
            else ""
        )
        raise FileNotFoundError(f"no *.xml files in {str(folder)!r}{hint}")
    records, class_names = _records(xml_paths, root / "images", class_names, fix, folder)
    images = root / "images"
    annotated = {file_id(r.path) for r in records}  # not names: case-insensitive file systems
    extra = [p for p in image_files(images) if file_id(p) not in annotated]
    for image_id, path in enumerate(extra, start=len(records) + 1):
        width, height = displayed_size(path)
        records.append(
            make_record(path, width, height, [], [], [], source=str(path), names=[], fix=fix,
                        image_id=image_id)
        )  # fmt: skip
    if extra:
        print(
            f"{field}: {len(extra)} image(s) in {str(root / 'images')!r} have no XML in "
            "annotations/: used as images without objects"
        )
    return records, class_names


def _note_case_twins(class_names: list[str]) -> None:
    """Say when class names differ only in letter case (``Person`` / ``person``): they stay
    two classes, as written, but that is more often a labelling slip than a distinction."""
    by_folded: dict[str, list[str]] = {}
    for name in class_names:
        by_folded.setdefault(name.casefold(), []).append(name)
    twins = [names for names in by_folded.values() if len(names) > 1]
    if twins:
        print(
            f"note: VOC <name> values {twins} differ only in letter case; each is its own class "
            "(rename them in the XML files to merge them)"
        )


def is_vocdevkit(root: Path) -> bool:
    """True for a VOCdevkit year folder (``JPEGImages/`` and ``Annotations/``)."""
    return (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()


def has_val_split(root: Path) -> bool:
    """True for a VOCdevkit folder that ships its own validation list (val.txt or test.txt)."""
    main = root / "ImageSets" / "Main"
    return is_vocdevkit(root) and any((main / f"{s}.txt").is_file() for s in ("val", "test"))


def voc_split(root: Path, *, train: bool, separate_val_dir: bool) -> str:
    """Which ``ImageSets/Main/<split>.txt`` a VOCdevkit folder is read with.

    Validation reads ``test.txt`` when it exists (VOC2007 with its test set unpacked), else
    ``val.txt``. Training reads ``trainval.txt`` when validation uses ``test`` or another
    folder (the standard VOC recipe), else ``train.txt`` (train and val from one folder).
    """
    main = root / "ImageSets" / "Main"
    has_test = (main / "test.txt").is_file()
    if not train:
        return "test" if has_test else "val"
    if (has_test or separate_val_dir) and (main / "trainval.txt").is_file():
        return "trainval"
    return "train"


def load_vocdevkit(
    root: Path, split: str, class_names: list[str] | None, *, fix: bool
) -> tuple[list[ImageRecord], list[str]]:
    """A VOCdevkit year folder (``JPEGImages``, ``Annotations``, ``ImageSets/Main``)."""
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"VOC split file {str(split_file)!r} does not exist")
    ids = read_name_list(split_file)
    xml_paths = [root / "Annotations" / f"{i}.xml" for i in ids]
    for p in xml_paths:
        if not p.is_file():
            raise FileNotFoundError(f"{split_file}: lists {p.stem!r} but {str(p)!r} is missing")
    return _records(xml_paths, root / "JPEGImages", class_names, fix)
