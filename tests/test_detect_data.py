"""Detection loaders on small generated COCO / VOC / VOCdevkit folders, good and bad."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.augment import seeded
from tasks.detect.augment import AugmentConfig, build_augment
from tasks.detect.dataset import DetectionDataset, load_detection_folder
from tasks.detect.records import AnnotationError
from tasks.images import DataError, ImageDecodeError


def _image(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, dtype=np.uint8)).save(path)


def _coco(root: Path, anns: list[dict], *, images: list[dict] | None = None) -> Path:
    images = images or [
        {"id": 7, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 9, "file_name": "b.png", "width": 40, "height": 30},
    ]
    for img in images:
        _image(root / "images" / img["file_name"])
    cats = [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]  # non-contiguous ids
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return root


GOOD = [
    {"id": 1, "image_id": 7, "category_id": 17, "bbox": [1, 2, 10, 5]},
    {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20, 10, 5, 5], "iscrowd": 1},
]


def _voc_xml(path: Path, objects: list[tuple[str, list[float], int]], filename: str) -> None:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>40</width>"
        f"<height>30</height></size>{objs}</annotation>"
    )


def test_coco_contiguous_labels_boxes_and_crowd(tmp_path):
    records, names, ids = load_detection_folder(
        _coco(tmp_path, GOOD), field="data.train", class_names=None, fix=False
    )
    assert names == ["cat", "dog"] and ids == [3, 17]
    r = {rec.image_id: rec for rec in records}
    np.testing.assert_allclose(r[7].boxes, [[1, 2, 11, 7], [20, 10, 25, 15]])
    assert r[7].labels.tolist() == [2, 1] and r[7].iscrowd.tolist() == [False, True]
    assert len(r[9].boxes) == 0  # an image without objects is kept
    image, target = DetectionDataset(records)[0]
    assert image.shape == (3, 30, 40) and target["boxes"].shape == (2, 4)


def test_coco_areas_are_read_for_the_area_ranges(tmp_path):
    """A COCO ``area`` (the mask's) sets an object's small/medium/large range in evaluation;
    a missing or non-positive one is NaN (the box area is used), and so is every area after
    augmentation, which changes the boxes; one that is not a number is an error."""
    anns = [dict(a, area=area) for a, area in zip(GOOD, (12.5, "7"), strict=True)]
    anns += [{"id": i, "image_id": 9, "category_id": 3, "bbox": [1, 1, 4, 4], **extra}
             for i, extra in ((3, {}), (4, {"area": -2}), (5, {"area": 0}),
                              (6, {"area": None}))]  # fmt: skip
    for bad in ("n/a", True):
        message = rf"annotations\[2\]: area is {bad!r}, expected a number"
        with pytest.raises(DataError, match=message):
            load_detection_folder(_coco(tmp_path / str(bad), [*anns[:2], dict(anns[2], area=bad)]),
                                  field="data.train", class_names=None, fix=False)  # fmt: skip
    records, _, _ = load_detection_folder(
        _coco(tmp_path, anns), field="data.train", class_names=None, fix=False
    )
    r = {rec.image_id: rec for rec in records}
    assert r[7].areas.tolist() == [12.5, 7.0] and np.isnan(r[9].areas).all()
    assert DetectionDataset(records)[0][1]["area"].tolist() == [12.5, 7.0]
    augment = build_augment(AugmentConfig(hflip=1.0))
    assert torch.isnan(DetectionDataset(records, augment)[0][1]["area"]).all()


def test_coco_annotations_folder_and_images_next_to_json(tmp_path):
    (tmp_path / "annotations").mkdir()
    _coco(tmp_path, GOOD)
    (tmp_path / "annotations.json").rename(tmp_path / "annotations" / "instances_val.json")
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / name).rename(tmp_path / "annotations" / name)
    records, _, _ = load_detection_folder(tmp_path, field="data.val", class_names=None, fix=False)
    assert records[0].path.parent == tmp_path / "annotations"
    # the COCO download: annotations/instances_{train,val}2017.json, images in {split}2017/
    for name in ("a.png", "b.png"):
        (tmp_path / "annotations" / name).unlink()
    annotations = tmp_path / "annotations"
    (annotations / "instances_val.json").rename(annotations / "instances_val2017.json")
    train_doc = json.loads((annotations / "instances_val2017.json").read_text())
    train_doc["annotations"] = train_doc["annotations"][:1]
    (annotations / "instances_train2017.json").write_text(json.dumps(train_doc))
    for split in ("train2017", "val2017"):
        for name in ("a.png", "b.png"):
            _image(tmp_path / split / name)
    for field, split, boxes in (("data.train", "train2017", 1), ("data.val", "val2017", 2)):
        records, _, _ = load_detection_folder(tmp_path, field=field, class_names=None, fix=False)
        assert [r.path.parent.name for r in records] == [split] * 2
        assert sum(len(r.boxes) for r in records) == boxes


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([1, 2, float("nan"), 5], "non-finite"),
        ([1, 2, 0, 5], "zero or negative area"),
        ([1, 2, -3, 5], "zero or negative area"),
        ([30, 2, 20, 5], "outside the 40x30 image"),
    ],
)
def test_coco_bad_boxes_name_file_and_object(tmp_path, bbox, message):
    root = _coco(tmp_path, [{"id": 5, "image_id": 7, "category_id": 3, "bbox": bbox}])
    with pytest.raises(AnnotationError, match=message) as err:
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    assert "annotations.json" in str(err.value) and "annotation id 5" in str(err.value)


def test_fix_boxes_clips_and_drops_and_counts(tmp_path):
    anns = [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [30, 2, 20, 5]},  # clipped
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [1, 2, 0, 5]},  # dropped
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, None, 3, 5]},  # dropped (NaN)
        {"id": 4, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 5]},  # fine
    ]
    records, _, _ = load_detection_folder(
        _coco(tmp_path, anns), field="data.train", class_names=None, fix=True
    )
    r = next(rec for rec in records if rec.image_id == 7)
    assert r.fixed == 3
    np.testing.assert_allclose(r.boxes, [[30, 2, 40, 7], [1, 2, 4, 7]])
    assert DetectionDataset(records).fixed == 3


def test_coco_missing_key_unknown_category_and_missing_image(tmp_path):
    bad_key = _coco(tmp_path / "k", [{"id": 1, "image_id": 7, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(DataError, match=r"annotations\[0\]: missing key 'category_id'"):
        load_detection_folder(bad_key, field="data.train", class_names=None, fix=False)
    bad_cat = _coco(
        tmp_path / "c", [{"id": 1, "image_id": 7, "category_id": 4, "bbox": [1, 1, 2, 2]}]
    )
    with pytest.raises(DataError, match="category_id 4 is not in 'categories'"):
        load_detection_folder(bad_cat, field="data.train", class_names=None, fix=False)
    root = _coco(tmp_path / "m", GOOD)
    (root / "images" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="'b.png' is listed but not found"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)


def test_coco_null_names_and_windows_file_names(tmp_path):
    root = _coco(tmp_path / "w", GOOD, images=[
        {"id": 7, "file_name": "sub/a.png", "width": 40, "height": 30},
    ])  # fmt: skip
    data = json.loads((root / "annotations.json").read_text())
    data["images"][0]["file_name"] = "sub\\a.png"  # written on Windows
    (root / "annotations.json").write_text(json.dumps(data))
    records, names, _ = load_detection_folder(root, field="data.train", class_names=None, fix=False)
    assert records[0].path == root / "images" / "sub" / "a.png" and names == ["cat", "dog"]
    data["images"][0]["file_name"] = None
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[0\]: file_name is null, expected a non-empty"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    data["images"][0]["file_name"] = "gone.png"
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError) as err:  # the JSON's folder is the root: named once
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    assert str(err.value).count(f"'{root}'") == 1
    for bad in (None, ""):
        data["categories"][1]["name"] = bad
        (root / "annotations.json").write_text(json.dumps(data))
        with pytest.raises(DataError, match=r"categories\[1\]: name is (null|\"\"), expected"):
            load_detection_folder(root, field="data.train", class_names=None, fix=False)


def test_val_label_missing_from_train_classes(tmp_path):
    root = _coco(tmp_path, GOOD)
    with pytest.raises(AnnotationError, match="label 'dog' is not in the class list"):
        load_detection_folder(root, field="data.val", class_names=["cat"], fix=False)


def test_images_are_checked_against_their_declared_size_when_opened(tmp_path):
    """Each image's header is read when the data is opened: a file that is not an image, or
    one whose size differs from the annotation's (boxes are checked and clipped against it),
    stops before training instead of at its first use, possibly epochs later."""
    root = _coco(tmp_path / "coco", GOOD)
    (root / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError, match="a.png"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    _image(root / "images" / "a.png", w=30, h=40)
    with pytest.raises(DataError, match=r"images\[0\]: image .*a\.png' is declared 40x30 but "
                       r"is 30x40 .*width and height swapped"):  # fmt: skip
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    _image(tmp_path / "voc" / "images" / "x1.jpg", w=50)
    _voc_xml(tmp_path / "voc" / "annotations" / "x1.xml", [("a", [1, 1, 9, 9], 0)], "x1.jpg")
    with pytest.raises(DataError, match=r"x1\.xml <size>: image .* declared 40x30 but is 50x30"):
        load_detection_folder(tmp_path / "voc", field="data.train", class_names=None, fix=False)


def test_voc_folder_sorted_names_difficult_and_stem_fallback(tmp_path):
    _image(tmp_path / "images" / "x1.jpg")
    _image(tmp_path / "images" / "x2.png")
    objs = [("zebra", [1, 1, 10, 10], 0), ("ant", [5, 5, 20, 20], 1)]
    _voc_xml(tmp_path / "annotations" / "x1.xml", objs, "x1.jpg")
    _voc_xml(tmp_path / "annotations" / "x2.xml", [], "renamed.png")  # falls back to the stem
    records, names, ids = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert names == ["ant", "zebra"] and ids == [1, 2]
    assert records[0].labels.tolist() == [2, 1] and records[0].iscrowd.tolist() == [False, True]
    np.testing.assert_allclose(records[0].boxes[0], [0, 0, 10, 10])  # 1-based inclusive -> 0-based
    assert records[1].path.name == "x2.png" and len(records[1].boxes) == 0


def test_one_box_set_reads_alike_from_coco_and_voc_sub_folders_included(tmp_path):
    """One set of boxes as COCO JSON and as VOC XML gives the same records: VOC's 1-based
    inclusive pixels (xmin=11, xmax=40 covers columns 10..39) are COCO's [10, y, 30, h], float
    coordinates included; ``difficult`` is ``iscrowd``; an image without an XML has no objects.
    An XML in ``annotations/a/`` annotates ``images/a/`` as COCO's ``file_name`` "a/x.png"
    does: it and the sub-folder's image without XML were silently left out."""
    # image: [(class, COCO [x, y, w, h], iscrowd / difficult)]
    objects = {
        "x1.png": [("dog", [10, 4, 30, 20], 0), ("cat", [0, 0, 40, 30], 1)],
        "a/x2.png": [("cat", [2.5, 3.25, 10, 6.5], 0)],
        "a/x3.png": [],
    }
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in
              enumerate(objects, start=1)]  # fmt: skip
    anns = [
        {"id": len(images) * 10 + k, "image_id": i, "category_id": 3 if c == "cat" else 17,
         "bbox": b, "iscrowd": d}
        for i, objs in enumerate(objects.values(), start=1) for k, (c, b, d) in enumerate(objs)
    ]  # fmt: skip
    coco = _coco(tmp_path / "coco", anns, images=images)  # categories cat (3), dog (17)
    voc = tmp_path / "voc"
    for name, objs in objects.items():
        _image(voc / "images" / name)
        if objs:  # "a/x2.png" -> annotations/a/x2.xml naming x2.png
            boxes = [(c, [x + 1, y + 1, x + w, y + h], d) for c, (x, y, w, h), d in objs]
            _voc_xml(voc / "annotations" / Path(name).with_suffix(".xml"), boxes,
                     Path(name).name)  # fmt: skip
    for kind, root in (("coco", coco), ("voc", voc)):
        records, names, _ = load_detection_folder(
            root, field="data.train", class_names=None, fix=False
        )
        assert names == ["cat", "dog"], kind
        by_name = {r.path.relative_to(root / "images").as_posix(): r for r in records}
        assert sorted(by_name) == sorted(objects), kind
        x1, x2, x3 = (by_name[n] for n in objects)
        np.testing.assert_allclose(x1.boxes, [[10, 4, 40, 24], [0, 0, 40, 30]])
        np.testing.assert_allclose(x2.boxes, [[2.5, 3.25, 12.5, 9.75]])
        assert x1.labels.tolist() == [2, 1] and x2.labels.tolist() == [1], kind
        assert x1.iscrowd.tolist() == [False, True] and len(x3.boxes) == 0, kind
    _voc_xml(voc / "annotations" / "a" / "x3.xml", [("cat", [1, 1, 5, 5], 0)], "x3.png")
    records, _, _ = load_detection_folder(voc, field="data.train", class_names=None, fix=False)
    x3 = next(r for r in records if r.path == voc / "images" / "a" / "x3.png")
    assert len(x3.boxes) == 1 and len(records) == 3


def test_voc_bad_inputs(tmp_path):
    _image(tmp_path / "images" / "x1.jpg")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 50, 10], 0)], "x1.jpg")
    with pytest.raises(AnnotationError, match=r"x1.xml: object 0 \(a\).*outside"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    (tmp_path / "annotations" / "x1.xml").write_text(
        "<annotation><object><name>a</name><bndbox><xmin>1</xmin></bndbox></object></annotation>"
    )
    with pytest.raises(AnnotationError, match="x1.xml object 0: missing <ymin>"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 5, 5], 0)], "gone.jpg")
    (tmp_path / "images" / "x1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="'gone.jpg' not found"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)


def test_voc_two_images_with_the_xml_stem_are_an_error(tmp_path):
    """No <filename> (or a stale one) and both x1.jpg and x1.png: which one the boxes belong
    to is unknown, so the reader names both instead of taking the first extension."""
    _image(tmp_path / "images" / "x1.jpg")
    _image(tmp_path / "images" / "x1.png")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 5, 5], 0)], "old.jpg")
    with pytest.raises(AnnotationError, match=r"x1.xml: image 'old.jpg' not found, and 2 "
                       r"images .* match its stem \(x1.jpg, x1.png\): expected one"):  # fmt: skip
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    (tmp_path / "images" / "x1.png").unlink()
    records, _, _ = load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    assert records[0].path.name == "x1.jpg"


def test_voc_class_names_differing_in_case_are_kept_and_noted(tmp_path, capsys):
    _image(tmp_path / "images" / "x1.jpg")
    objs = [("Person", [1, 1, 5, 5], 0), ("person", [2, 2, 6, 6], 0), ("car", [1, 1, 4, 4], 0)]
    _voc_xml(tmp_path / "annotations" / "x1.xml", objs, "x1.jpg")
    records, names, _ = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert names == ["Person", "car", "person"] and records[0].labels.tolist() == [1, 3, 2]
    assert "[['Person', 'person']] differ only in letter case" in capsys.readouterr().out


def test_vocdevkit_splits(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for i in ("a", "b", "c"):
        _image(tmp_path / "JPEGImages" / f"{i}.jpg")
        _voc_xml(tmp_path / "Annotations" / f"{i}.xml", [("dog", [1, 1, 9, 9], 0)], f"{i}.jpg")
    (main / "train.txt").write_text("a\nb\n")
    (main / "val.txt").write_text("c\n")
    train, _, _ = load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    val, _, _ = load_detection_folder(tmp_path, field="data.val", class_names=["dog"], fix=False)
    assert [r.path.stem for r in train] == ["a", "b"] and [r.path.stem for r in val] == ["c"]


def test_unknown_layout_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no detection data found"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)


def test_augment_keeps_boxes_on_objects():
    cfg = AugmentConfig(hflip=1.0, scale_min=0.5, scale_max=0.5, crop=1.0, color=0.2)
    aug = build_augment(cfg)
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[10:20, 5:15] = 255
    out = aug(image=image, bboxes=np.array([[5, 10, 15, 20]], dtype=np.float32),
              labels=np.array([1]), iscrowd=np.array([False]))  # fmt: skip
    (x1, y1, x2, _y2), img = np.asarray(out["bboxes"])[0], out["image"]
    assert x2 - x1 == pytest.approx(5, abs=1) and img[int(y1) + 2, int(x1) + 2].mean() > 100
    empty = aug(image=image, bboxes=np.zeros((0, 4)), labels=np.zeros(0), iscrowd=np.zeros(0))
    assert len(empty["bboxes"]) == 0


def test_augmentation_follows_torch_seed():
    """The same torch seed gives the same crop (train.seed reaches albumentations), another
    seed another crop (DataLoader workers, seeded apart, do not repeat each other)."""
    aug = build_augment(AugmentConfig(hflip=0.5, scale_min=0.5, scale_max=1.5, crop=1.0))
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    boxes = np.array([[20, 20, 40, 40]], dtype=np.float32)

    def sample(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return seeded(aug, image=image, bboxes=boxes, labels=np.array([1]),
                      iscrowd=np.array([False]))["image"]  # fmt: skip

    assert np.array_equal(sample(0), sample(0))
    assert any(not np.array_equal(sample(0), sample(s)) for s in (1, 2, 3))


def test_train_tool_reports_a_bad_annotation_as_one_error_line(tmp_path, capsys):
    """tools/train.py on a box outside its image: exit 2 and one ``error:`` line naming the
    file, not a traceback."""
    from test_export_roundtrip import load_tool

    _image(tmp_path / "images" / "x1.jpg")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 50, 10], 0)], "x1.jpg")
    data = [f"data.train={tmp_path}", f"data.val={tmp_path}"]
    code = load_tool("train").main(["--task", "detect", "--out", str(tmp_path / "run"), *data])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "x1.xml: object 0 (a)" in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["images"][1].update(id=7), r"images\[1\]: id 7 repeats"),
        (lambda d: d["categories"].append({"id": 4, "name": "cat"}), r"name 'cat' repeats"),
        (lambda d: d["categories"].append({"id": 3, "name": "cow"}), r"\[2\]: id 3 repeats"),
        (lambda d: d.update(categories=[]), "'categories' is empty"),
        (lambda d: d["images"][0].update(id="img_1"), r"images\[0\]: id is 'img_1', expected"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "abc", 5]), r"bbox is \[1, 2, 'abc'"),
        (lambda d: d["annotations"][0].update(iscrowd="yes"), "iscrowd is 'yes', expected 0 or 1"),
        (lambda d: d.update(annotations=None), "'annotations' is null, expected a list"),
        (lambda d: d.update(categories="abc"), "'categories' is \"abc\", expected a list"),
        (lambda d: d.update(images={"a": 1}), "'images' is {\"a\": 1}, expected a list"),
    ],
)
def test_coco_inconsistent_files_are_errors_not_silent_merges(tmp_path, edit, message):
    """Duplicate ids or names would silently drop an image or a class; wrong value types
    would surface as a bare int()/float() traceback."""
    root = _coco(tmp_path, GOOD)
    data = json.loads((root / "annotations.json").read_text())
    edit(data)
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):  # AnnotationError is a DataError
        load_detection_folder(root, field="data.train", class_names=None, fix=False)


def test_coco_size_zero_is_read_from_the_image(tmp_path):
    """Exporters that could not read an image write width/height 0: use the file's size."""
    images = [{"id": 7, "file_name": "a.png", "width": 0, "height": 0}]
    root = _coco(tmp_path, GOOD, images=images)
    records, _, _ = load_detection_folder(root, field="data.train", class_names=None, fix=False)
    assert (records[0].width, records[0].height) == (40, 30) and len(records[0].boxes) == 2


def test_coco_text_encodings_and_string_flags(tmp_path):
    root = _coco(tmp_path, [{**GOOD[0], "iscrowd": "0"}, {**GOOD[1], "iscrowd": "1"}])
    text = (root / "annotations.json").read_text()
    (root / "annotations.json").write_bytes(b"\xef\xbb\xbf" + text.encode())  # a BOM
    records, _, _ = load_detection_folder(root, field="data.train", class_names=None, fix=False)
    assert next(r for r in records if r.image_id == 7).iscrowd.tolist() == [False, True]
    (root / "annotations.json").write_bytes(text.replace("dog", "d\u00f6g").encode("latin-1"))
    with pytest.raises(DataError, match="annotations.json: not UTF-8"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)


def test_voc_images_without_xml_are_images_without_objects(tmp_path, capsys):
    """LabelImg writes no XML for an image with nothing in it: keep the image, say so."""
    for stem in ("x1", "x2"):
        _image(tmp_path / "images" / f"{stem}.jpg")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\0")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 9, 9], 0)], "x1.jpg")
    records, names, _ = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert [r.path.name for r in records] == ["x1.jpg", "x2.jpg"] and names == ["a"]
    assert len(records[1].boxes) == 0 and (records[1].width, records[1].height) == (40, 30)
    assert "data.train: 1 image(s)" in capsys.readouterr().out
    (tmp_path / "images" / "x3.jpg").write_bytes(b"half a file")
    with pytest.raises(ImageDecodeError, match=r"x3\.jpg"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)


def test_voc_copied_xml_with_a_stale_filename_is_an_error(tmp_path):
    """LabelImg users copy an XML and edit its boxes: its <filename> still names the first
    image, whose boxes would silently gain the copy's while the second image lost them."""
    for stem in ("x1", "x2"):
        _image(tmp_path / "images" / f"{stem}.jpg")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 9, 9], 0)], "x1.jpg")
    _voc_xml(tmp_path / "annotations" / "x2.xml", [("a", [5, 5, 19, 19], 0)], "x1.jpg")
    stale = r"x2\.xml: <filename> names image .*x1\.xml' annotates too.*fix x2\.xml's"
    with pytest.raises(AnnotationError, match=stale):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    # the copy sorts first: still the copy is named
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 9, 9], 0)], "x2.jpg")
    _voc_xml(tmp_path / "annotations" / "x2.xml", [("a", [5, 5, 19, 19], 0)], "x2.jpg")
    with pytest.raises(AnnotationError, match=r"x1\.xml: <filename> .*fix x1\.xml's"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="case-insensitive file system")
def test_voc_spellings_exporters_use(tmp_path):
    """A namespaced root, upper-case .XML files, <difficult>true; images whose names differ
    only in case are two images on a case-sensitive file system."""
    for stem in ("x1", "X1"):
        _image(tmp_path / "images" / f"{stem}.jpg")
    _voc_xml(tmp_path / "annotations" / "x1.XML", [("a", [1, 1, 9, 9], 0)], "x1.jpg")
    xml = tmp_path / "annotations" / "x1.XML"
    text = xml.read_text().replace("<annotation>", '<annotation xmlns="http://example.com/voc">')
    xml.write_text(text.replace("<difficult>0", "<difficult>true"))
    records, names, _ = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert sorted(r.path.name for r in records) == ["X1.jpg", "x1.jpg"] and names == ["a"]
    annotated = next(r for r in records if r.path.name == "x1.jpg")
    assert annotated.iscrowd.tolist() == [True]  # difficult -> ignore region
    xml.write_text(text.replace("<difficult>0", "<difficult>maybe"))
    with pytest.raises(AnnotationError, match=r"<difficult> is 'maybe', expected 0, 1, true"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    xml.write_text("<dataset><object/></dataset>")
    with pytest.raises(AnnotationError, match=r"root element is <dataset>, expected"):
        load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)


def test_voc_size_missing_or_zero_is_read_from_the_exif_turned_image(tmp_path):
    """Without a usable <size>, the size is the displayed one: a phone JPEG stored 30x40 with
    EXIF orientation 6 shows (and decodes) as 40x30."""
    (tmp_path / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 40)).save(tmp_path / "images" / "x1.jpg", exif=exif)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "x1.xml").write_text(
        "<annotation><filename>x1.jpg</filename><size><width>0</width><height>0</height>"
        "</size><object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>38</xmax>"
        "<ymax>20</ymax></bndbox></object></annotation>"
    )
    records, _, _ = load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    assert (records[0].width, records[0].height) == (40, 30)
    image, _ = DetectionDataset(records)[0]
    assert image.shape == (3, 30, 40)
    records[0].width, records[0].height = 30, 40  # what a tool that ignores EXIF declares
    with pytest.raises(AnnotationError, match="declared 30x40 but decodes to 40x30.*EXIF"):
        DetectionDataset(records)[0]


def _devkit(root: Path) -> Path:
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for i in "abcde":
        _image(root / "JPEGImages" / f"{i}.jpg")
        _voc_xml(root / "Annotations" / f"{i}.xml", [("dog", [1, 1, 9, 9], 0)], f"{i}.jpg")
    (main / "train.txt").write_text("\ufeffa\r\nb\r\nc\r\n\r\n")  # Notepad: BOM, CRLF
    (main / "val.txt").write_text("d\ne\n")
    return root


def test_vocdevkit_alone_validates_on_its_val_list(tmp_path):
    """data.train=VOCdevkit without data.val reads train.txt and val.txt, not a hold-out of
    train.txt that leaves val.txt unread."""
    from tasks.config import load_config
    from tasks.detect.config import DetectConfig
    from tasks.detect.task import DetectTask

    task = DetectTask(load_config(DetectConfig, overrides=[f"data.train={_devkit(tmp_path)}"]))
    train, val = task.build_datasets()
    assert [r.path.stem for r in train.records] == ["a", "b", "c"]
    assert [r.path.stem for r in val.records] == ["d", "e"]


def test_eval_reads_only_the_validation_folder(tmp_path):
    """tools/eval.py with data.val: the classes come from the checkpoint, so the training
    annotations need not exist any more."""
    from tasks.config import load_config
    from tasks.detect.config import DetectConfig
    from tasks.detect.task import DetectTask

    root = _coco(tmp_path / "val", GOOD)
    overrides = [f"data.train={tmp_path / 'gone'}", f"data.val={root}"]
    task = DetectTask(load_config(DetectConfig, overrides=overrides))
    task.class_names = ["ant", "cat", "bee", "dog"]  # what load_task restores from the checkpoint
    val = task.build_val_dataset()
    # classes the val file lacks get distinct unused ids: COCOeval needs distinct ids
    assert len(val) == 2 and task.category_ids == [18, 3, 19, 17]


@pytest.mark.parametrize(
    "objects, images, message",
    [
        ([], 3, "no object classes"),
        ([("a", [1, 1, 9, 9], 0)], 1, "has 1 image.*cannot hold out"),
    ],
)
def test_data_that_cannot_train_says_why(tmp_path, objects, images, message):
    from tasks.config import load_config
    from tasks.detect.config import DetectConfig
    from tasks.detect.task import DetectTask

    for i in range(images):
        _image(tmp_path / "images" / f"x{i}.jpg")
        _voc_xml(tmp_path / "annotations" / f"x{i}.xml", objects, f"x{i}.jpg")
    task = DetectTask(load_config(DetectConfig, overrides=[f"data.train={tmp_path}"]))
    with pytest.raises(DataError, match=message):
        task.build_datasets()


def test_roboflow_export_without_image_sizes(tmp_path):
    """Roboflow writes ``_annotations.coco.json`` beside the images; some exporters leave
    out width/height, which then come from the image file. Its first category names the
    data set, as the others' supercategory, and is no class."""
    _image(tmp_path / "a.jpg", 40, 30)
    doc = {
        "images": [{"id": 0, "file_name": "a.jpg"}],
        "categories": [{"id": 0, "name": "cells"}, {"id": 1, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 2, 10, 5]}],
    }
    (tmp_path / "_annotations.coco.json").write_text(json.dumps(doc))
    records, names, _ = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert names == ["cells", "cell"] and (records[0].width, records[0].height) == (40, 30)
    doc["categories"] = [{"id": 0, "name": "cells", "supercategory": "none"},
                         {"id": 1, "name": "cell", "supercategory": "cells"}]  # fmt: skip
    (tmp_path / "_annotations.coco.json").write_text(json.dumps(doc))
    records, names, ids = load_detection_folder(
        tmp_path, field="data.train", class_names=None, fix=False
    )
    assert names == ["cell"] and ids == [1] and records[0].labels.tolist() == [1]


def test_coco_validation_file_may_list_categories_no_box_uses(tmp_path):
    """CVAT and Label Studio export every label of the project: a validation file's unused
    category is no error; a used one outside the training classes still is, naming the
    annotation."""
    root = _coco(tmp_path, GOOD)
    data = json.loads((root / "annotations.json").read_text())
    data["categories"].append({"id": 30, "name": "zebra"})
    (root / "annotations.json").write_text(json.dumps(data))
    records, names, ids = load_detection_folder(
        root, field="data.val", class_names=["cat", "dog"], fix=False
    )
    assert names == ["cat", "dog"] and ids == [3, 17]
    assert next(r for r in records if r.image_id == 7).labels.tolist() == [2, 1]
    data["annotations"][0]["category_id"] = 30
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotations\[0\] \(category_id 30\): label "
                       r"'zebra' is not in the class list"):  # fmt: skip
        load_detection_folder(root, field="data.val", class_names=["cat", "dog"], fix=False)


def test_coco_one_file_listed_twice_is_an_error(tmp_path):
    """Merged exports list a file under two ids, each with part of its boxes: as two samples
    the missing part of each would be trained as background."""
    images = [
        {"id": 7, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 9, "file_name": "./a.png", "width": 40, "height": 30},
    ]
    root = _coco(tmp_path, GOOD, images=images)
    with pytest.raises(AnnotationError, match=r"images with id 7 and id 9 both name file"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)


def test_normalised_box_coordinates_are_an_error(tmp_path):
    """Boxes in 0..1 (YOLO-style converters) would train as sub-pixel boxes in a corner."""
    anns = [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [0.1, 0.2, 0.3, 0.4]}]
    root = _coco(tmp_path / "coco", anns)
    with pytest.raises(AnnotationError, match=r"annotations.json: all 1 box\(es\) lie within "
                       r"\[0, 1\].*normalised"):  # fmt: skip
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
    # a one-pixel box in the corner is pixels: integers
    anns[0]["bbox"] = [0, 0, 1, 1]
    root = _coco(tmp_path / "coco1", anns)
    load_detection_folder(root, field="data.train", class_names=None, fix=False)
    voc = tmp_path / "voc"
    _image(voc / "images" / "x1.jpg")
    _voc_xml(voc / "annotations" / "x1.xml", [("a", [0.1, 0.2, 0.5, 0.6], 0)], "x1.jpg")
    with pytest.raises(AnnotationError, match=r"x1\.xml: all 1 box\(es\) lie within \[0, 1\]"):
        load_detection_folder(voc, field="data.train", class_names=None, fix=False)


def test_voc_stem_fallback_finds_any_extension_case(tmp_path):
    """``x1.Jpg`` (cameras, Windows renames) is found for x1.xml like x1.jpg and x1.JPG."""
    _image(tmp_path / "images" / "x1.Jpg")
    _voc_xml(tmp_path / "annotations" / "x1.xml", [("a", [1, 1, 9, 9], 0)], "gone.jpg")
    records, _, _ = load_detection_folder(tmp_path, field="data.train", class_names=None, fix=False)
    assert [r.path.name for r in records] == ["x1.Jpg"] and len(records[0].boxes) == 1


def test_other_tools_coco_file_names_are_pointed_at(tmp_path):
    """FiftyOne writes labels.json, Label Studio result.json, mmdetection users
    annotations/train.json: the error names the file found and what to call it."""
    (tmp_path / "fo").mkdir()
    (tmp_path / "fo" / "labels.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="it holds labels.json: if that is a COCO file, "
                       "rename it to annotations.json"):  # fmt: skip
        load_detection_folder(tmp_path / "fo", field="data.train", class_names=None, fix=False)
    _image(tmp_path / "mm" / "images" / "a.jpg")
    (tmp_path / "mm" / "annotations").mkdir()
    (tmp_path / "mm" / "annotations" / "train.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"it holds train.json: .*instances_train.json"):
        load_detection_folder(tmp_path / "mm", field="data.train", class_names=None, fix=False)
    _devkit(tmp_path / "VOCdevkit" / "VOC2007")
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit folder\(s\) VOC2007: point"):
        load_detection_folder(tmp_path / "VOCdevkit", field="data.train", class_names=None,
                              fix=False)  # fmt: skip


def test_coco_bbox_numbers_written_as_text(tmp_path):
    """Hand-written and CSV-converted files quote numbers: ``"12.5"`` is read as ids and
    sizes are; text that is no number is still an error naming it."""
    anns = [{**GOOD[0], "bbox": ["1", "2", "10.5", " 5 "]}]
    root = _coco(tmp_path, anns)
    records, _, _ = load_detection_folder(root, field="data.train", class_names=None, fix=False)
    np.testing.assert_allclose(records[0].boxes, [[1, 2, 11.5, 7]])
    anns[0]["bbox"] = ["1", "2", "ten", "5"]
    root = _coco(tmp_path, anns)
    with pytest.raises(AnnotationError, match=r"bbox is \['1', '2', 'ten', '5'\], expected"):
        load_detection_folder(root, field="data.train", class_names=None, fix=False)
