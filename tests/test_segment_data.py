"""Segmentation loaders on small generated fixtures: the three layouts and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.config import ConfigError
from tasks.images import DataError
from tasks.segment.config import SegmentConfig
from tasks.segment.data import SegmentationDataset, open_source, pad_collate, scan_labels
from tasks.segment.task import SegmentTask

RNG = np.random.default_rng(0)


def _image(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, labels: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8))
    if mode == "P":
        img.putpalette([(i * 37) % 256 for i in range(768)])  # colours unrelated to indices
    img.save(path)


def _labels(h: int, w: int, top: int = 2) -> np.ndarray:
    lab = RNG.integers(0, top + 1, (h, w))
    lab[0, 0] = 255  # one void pixel
    return lab


def _folder(root: Path, sizes=((20, 30), (25, 17), (31, 31))) -> Path:
    for i, (h, w) in enumerate(sizes):
        _image(root / "images" / f"im{i}.jpg", h, w)
        _mask(root / "masks" / f"im{i}.png", _labels(h, w), mode="P" if i == 1 else "L")
    return root


def _dataset(
    root: Path, num_classes: int = 3, palette=None, in_memory: bool = False
) -> SegmentationDataset:
    from tasks.segment.augment import build_transform

    source = open_source(str(root), "train", ignore_index=255, palette=palette)
    return SegmentationDataset(
        source, num_classes=num_classes, ignore_index=255,
        transform=build_transform(train=False, ignore_index=255), in_memory=in_memory,
    )  # fmt: skip


def test_in_memory_samples_equal_decoded_ones_and_skip_the_files(tmp_path):
    root = _folder(tmp_path / "d")
    plain, cached = _dataset(root), _dataset(root, in_memory=True)  # decodes everything now
    decoded = [plain[i] for i in range(len(plain))]
    for path in (root / "images").iterdir():  # no epoch may need the files any more
        path.unlink()
    for i, (image, mask) in enumerate(decoded):
        again_image, again_mask = cached[i]
        assert torch.equal(again_image, image) and torch.equal(again_mask, mask)
    with pytest.raises(Exception, match="im0"):
        plain[0]  # the uncached dataset still reads from disk
    loader = torch.utils.data.DataLoader(cached, batch_size=None, num_workers=1)
    for (image, mask), (again_image, again_mask) in zip(decoded, loader, strict=True):
        assert torch.equal(again_image, image) and torch.equal(again_mask, mask)  # workers too
    from tasks.segment.augment import build_transform

    image, mask = (a.copy() for a in cached.raw(1))
    cached.transform = build_transform(train=True, ignore_index=255, crop_size=16, scale=(0.8, 1.2))
    for _ in range(3):  # training augmentation must never write into the cached arrays
        cached[1]
    assert np.array_equal(cached.raw(1)[0], image) and np.array_equal(cached.raw(1)[1], mask)


def test_labels_above_255_survive_augmentation():
    from tasks.segment.augment import build_transform

    mask = np.full((20, 20), 300, dtype=np.int64)
    mask[:5] = 255  # void
    image = np.zeros((20, 20, 3), np.uint8)
    transform = build_transform(train=True, ignore_index=255, num_classes=301, crop_size=16)
    _, out = transform(image, mask)
    assert set(out.unique().tolist()) <= {255, 300} and 300 in out.unique().tolist()


def test_ignore_index_must_be_a_mask_value():
    cfg = SegmentConfig()
    cfg.data.ignore_index = -1
    with pytest.raises(ConfigError, match="data.ignore_index=-1: expected a mask value"):
        SegmentTask(cfg)


def test_folder_pairs_palette_and_index_masks(tmp_path):
    root = _folder(tmp_path / "d")
    p_mask = Image.open(root / "masks" / "im1.png")
    assert p_mask.mode == "P"
    ds = _dataset(root)
    assert len(ds) == 3
    image, mask = ds[1]
    assert image.shape == (3, 25, 17) and mask.dtype == torch.int64
    assert torch.equal(
        mask, torch.from_numpy(np.asarray(p_mask).astype(np.int64))
    )  # indices, not RGB
    assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
    assert scan_labels([ds.source], 255) == ([0, 1, 2], True)


def test_task_builds_from_train_and_val_dirs_and_pads_batches(tmp_path):
    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val", sizes=((9, 13), (14, 8)))
    cfg = SegmentConfig()
    cfg.data.train, cfg.data.val, cfg.data.crop_size = str(train), str(val), 24
    task = SegmentTask(cfg)
    train_set, val_set = task.build_datasets()
    assert task.class_names == ["0", "1", "2"]  # num_classes found by scanning the masks
    images, masks = task.collate([train_set[i] for i in range(3)])
    assert images.shape == (3, 3, 24, 24) and masks.shape == (3, 24, 24)
    images, masks = task.collate([val_set[0], val_set[1]])  # whole images, different sizes
    assert images.shape == (2, 3, 14, 13)
    assert (masks[0, 9:] == 255).all() and (images[0, :, 9:] == 0).all()
    assert (masks[1, :, 8:] == 255).all()


def test_explicit_num_classes_wins_and_class_names_checked(tmp_path):
    cfg = SegmentConfig()
    cfg.data.train = str(_folder(tmp_path / "d"))
    cfg.data.num_classes, cfg.data.class_names = 5, ["bg", "a", "b", "c", "d"]
    task = SegmentTask(cfg)
    train_set, val_set = task.build_datasets()  # val held out from train
    assert task.class_names == ["bg", "a", "b", "c", "d"]
    assert len(train_set) + len(val_set) == 3
    cfg.data.class_names = ["bg", "a"]
    with pytest.raises(ValueError, match="class_names has 2 names"):
        SegmentTask(cfg).build_datasets()


def test_head_width_only_where_the_head_has_one():
    cfg = SegmentConfig()
    cfg.data.synthetic_train, cfg.data.synthetic_val = 2, 2
    cfg.model.head, cfg.model.channels = "deeplabv3", 64
    task = SegmentTask(cfg)
    task.build_datasets()
    with pytest.raises(ConfigError, match="model.channels=64 is not used by model.head='deeplab"):
        task.build_model()
    cfg.model.channels = -5
    with pytest.raises(ConfigError, match="model.channels=-5: expected a size >= 0"):
        SegmentTask(cfg)
    cfg.model.head, cfg.model.channels = "pspnet", 64
    task = SegmentTask(cfg)
    task.build_datasets()
    assert task.build_model().head.bottleneck[0].out_channels == 64


def test_mask_size_mismatch_names_both_sizes(tmp_path):
    root = _folder(tmp_path / "d")
    _mask(root / "masks" / "im0.png", _labels(21, 30))
    with pytest.raises(ValueError, match=r"im0\.png.*30x21.*30x20"):
        _dataset(root)[0]


def test_label_out_of_range_names_value_and_file(tmp_path):
    root = _folder(tmp_path / "d")
    lab = _labels(20, 30)
    lab[3, 3] = 7
    _mask(root / "masks" / "im0.png", lab)
    with pytest.raises(ValueError, match=r"im0\.png.*\[7\].*num_classes=3"):
        _dataset(root)[0]


def test_gif_webp_and_16bit_colour_masks(tmp_path):
    """A GIF writer renumbers a greyscale mask's values into palette slots: read the grey
    values. Pillow's default WebP is lossy (refused like JPEG), its lossless WebP is exact.
    A 16-bit RGB mask would read as its high bytes (all 0): refused."""
    import cv2

    from tasks.segment.masks import read_mask

    labels = np.array([[0, 1, 3, 255], [3, 3, 1, 0]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "m.gif")
    assert Image.open(tmp_path / "m.gif").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "m.gif"), labels)
    voc = Image.fromarray(np.array([[0, 7], [7, 7]], dtype=np.uint8), "P")
    voc.putpalette([0, 0, 0] + [128, 0, 0] * 6 + [128, 128, 128])  # VOC: class 7 is grey
    voc.save(tmp_path / "voc.png")
    assert read_mask(tmp_path / "voc.png").tolist() == [[0, 7], [7, 7]]  # PNG: slot numbers
    icc = b"\0" * 6000  # a large ICC chunk before the bitstream (VP8X layout)
    Image.fromarray(labels).save(tmp_path / "exact.webp", lossless=True, icc_profile=icc)
    np.testing.assert_array_equal(read_mask(tmp_path / "exact.webp"), labels)
    binary = np.zeros((64, 64), dtype=np.uint8)
    binary[16:48, 8:40] = 255
    Image.fromarray(binary).save(tmp_path / "lossy.webp", quality=30)
    with pytest.raises(DataError, match=r"lossy\.webp' is a lossy WebP"):
        read_mask(tmp_path / "lossy.webp")
    snapped = read_mask(tmp_path / "lossy.webp", values=[0, 255])
    assert set(np.unique(snapped).tolist()) == {0, 1} and (snapped == binary // 255).mean() > 0.97
    cv2.imwrite(str(tmp_path / "wide.png"), np.stack([labels.astype(np.uint16)] * 3, -1))
    with pytest.raises(DataError, match=r"wide\.png' is a 16-bit RGB image"):
        read_mask(tmp_path / "wide.png")


def test_corrupt_mask_is_one_error_naming_it(tmp_path):
    """A PNG whose header chunk is damaged makes PIL raise ValueError, not OSError."""
    from tasks.segment.masks import read_mask

    path = tmp_path / "m.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[8:12] = (5).to_bytes(4, "big")  # IHDR's length field
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"cannot read mask .*m\.png"):
        read_mask(path)


def test_rgb_mask_needs_palette(tmp_path):
    root = _folder(tmp_path / "d", sizes=((6, 5),))
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[:3] = (128, 0, 0)
    Image.fromarray(rgb).save(root / "masks" / "im0.png")
    with pytest.raises(ValueError, match=r"im0\.png.*index PNG.*data\.palette"):
        _dataset(root)[0]
    _, mask = _dataset(root, palette=[[0, 0, 0], [128, 0, 0]])[0]
    assert (mask[:3] == 1).all() and (mask[3:] == 0).all()
    with pytest.raises(ValueError, match=r"colour \[128, 0, 0\]"):
        _dataset(root, palette=[[0, 0, 0]])[0]


def test_palette_sets_the_class_count(tmp_path):
    """A palette lists the classes, whether or not these masks use every colour (a 3-class
    model from a 4-colour palette could not predict the fourth); a void entry is no class."""
    root = _folder(tmp_path / "d", sizes=((6, 5), (6, 5)))
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[:3] = (128, 0, 0)
    for i in range(2):
        Image.fromarray(rgb).save(root / "masks" / f"im{i}.png")
    palette = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [0, 0, 128], [255, 255, 255, 255]]
    task = _task(train=str(root), palette=palette)
    task.build_datasets()
    assert task.class_names == ["0", "1", "2", "3"]


def test_image_without_mask(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "masks" / "im2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask.*im2\.jpg"):
        _dataset(root)


def test_unknown_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="images.*masks.*JPEGImages.*annotations.json"):
        open_source(str(tmp_path / "x"), "train", ignore_index=255)
    _folder(tmp_path / "x" / "train")  # the data set one level down
    (tmp_path / "x" / "img").mkdir()
    with pytest.raises(FileNotFoundError, match=r"sub-folder\(s\) \['train'\] are: point"):
        open_source(str(tmp_path / "x"), "train", ignore_index=255)
    (tmp_path / "x" / "train" / "masks").rename(tmp_path / "x" / "ann")
    with pytest.raises(FileNotFoundError, match=r"holds \['ann', 'img', 'train'\]: rename"):
        open_source(str(tmp_path / "x"), "train", ignore_index=255)
    (tmp_path / "x" / "a.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="is not a segmentation data set; expected"):
        open_source(str(tmp_path / "x" / "a.txt"), "train", ignore_index=255)


def test_voc_layout_train_and_val_lists(tmp_path):
    root = tmp_path / "VOC"
    for name in ("a", "b", "c"):
        _image(root / "JPEGImages" / f"{name}.jpg", 12, 10)
        _mask(root / "SegmentationClass" / f"{name}.png", _labels(12, 10, top=20), mode="P")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    (sets / "val.txt").write_text("c\n")
    cfg = SegmentConfig()
    cfg.data.train, cfg.data.num_classes = str(root), 21
    train_set, val_set = SegmentTask(cfg).build_datasets()  # val = the VOC val list
    assert (len(train_set), len(val_set)) == (2, 1)
    assert val_set[0][1].shape == (12, 10)
    (sets / "val.txt").unlink()  # no val list (a CVAT export has one list): a hold-out
    cfg.data.val_fraction = 0.5
    train_set, val_set = SegmentTask(cfg).build_datasets()
    assert (len(train_set), len(val_set)) == (1, 1)
    (sets / "train.txt").rename(sets / "default.txt")
    with pytest.raises(FileNotFoundError, match=r"train.txt' does not exist \(it holds "
                       r"default.txt\); expected train.txt naming the train images"):  # fmt: skip
        SegmentTask(cfg).build_datasets()


def test_coco_polygons_and_rle_render_to_semantic_masks(tmp_path):
    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    _image(root / "images" / "p.jpg", 20, 30)
    rle_mask = np.zeros((20, 30), dtype=np.uint8, order="F")
    rle_mask[10:15, 20:28] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    crowd = mask_utils.encode(
        np.asfortranarray((np.arange(30)[None] >= 28) & np.ones((20, 1), bool)).astype(np.uint8)
    )
    crowd["counts"] = crowd["counts"].decode()
    doc = {
        "images": [{"id": 1, "file_name": "p.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 5, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 60,
             "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]], "bbox": [2, 2, 10, 6]},
            {"id": 2, "image_id": 1, "category_id": 9, "iscrowd": 0, "area": 40,
             "segmentation": rle, "bbox": [20, 10, 8, 5]},
            {"id": 3, "image_id": 1, "category_id": 9, "iscrowd": 1, "area": 40,
             "segmentation": crowd, "bbox": [28, 0, 2, 20]},
        ],
    }  # fmt: skip
    (root / "annotations.json").write_text(json.dumps(doc))
    source = open_source(str(root), "train", ignore_index=255)
    assert source.class_names == ["background", "person", "dog"]  # ids 5, 9 -> 1, 2
    image, mask, _ = source.load(0)
    assert image.shape == (20, 30, 3)
    assert (mask[3:8, 3:12] == 1).all()  # polygon, person
    assert (mask[10:15, 20:28] == 2).all()  # RLE, dog
    assert (mask[:, 28:] == 255).all()  # crowd -> void
    assert mask[0, 0] == 0 and mask[18, 5] == 0


def _uncompressed(rle: dict) -> dict:
    """A compressed RLE as COCO's uncompressed form: run lengths, column-major, from 0s."""
    from pycocotools import mask as mask_utils

    flat = mask_utils.decode(rle).ravel(order="F")
    edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # where a run ends
    runs = np.diff(np.r_[0, edges]).tolist()
    return {"size": rle["size"], "counts": runs}


def test_one_mask_set_reads_alike_from_coco_polygons_rle_folder_and_voc(tmp_path):
    """The same objects as COCO polygons, compressed and uncompressed RLE, an images/ + masks/
    folder and VOC palette PNGs give one label map, pixel for pixel, equal to pycocotools'
    annToMask drawn from the largest shape to the smallest. A crowd region inside a larger
    object stays void (it was drawn under every object, becoming the table around it), and
    with no ``area`` in the file the draw order is still by size (it was file order, a table
    listed last covering the donut on it)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    h, w = 20, 30
    table = [[0, 0, 30, 0, 30, 20, 0, 20]]  # whole image, listed after the donut on it
    donut = [[20.5, 4.5, 26.5, 4.5, 26.5, 10.5, 20.5, 10.5]]
    crowd = [[5, 5, 15, 5, 15, 12, 5, 12]]  # a crowd of donuts on the table
    rles = [mask_utils.merge(mask_utils.frPyObjects(p, h, w)) for p in (donut, table, crowd)]
    anns = [  # no "area": exporters leave it out
        dict(id=1, image_id=1, category_id=7, iscrowd=0),
        dict(id=2, image_id=1, category_id=3, iscrowd=0),
        dict(id=3, image_id=1, category_id=7, iscrowd=1),
    ]
    cats = [{"id": 3, "name": "table"}, {"id": 7, "name": "donut"}]
    forms = {
        "poly": [donut, table, {**rles[2], "counts": rles[2]["counts"].decode()}],
        "rle": [{**r, "counts": r["counts"].decode()} for r in rles],
        "uncompressed": [_uncompressed(r) for r in rles],
    }
    expected = np.zeros((h, w), np.int64)  # annToMask, drawn largest first
    coco = COCO()
    coco.imgs = {1: {"height": h, "width": w}}
    for k in np.argsort([-int(mask_utils.area(r)) for r in rles], kind="stable"):
        expected[coco.annToMask({**anns[k], "segmentation": forms["poly"][k]}) > 0] = (2, 1, 255)[k]
    assert expected[8, 10] == 255 and expected[7, 23] == 2 and expected[15, 2] == 1
    for form, segs in forms.items():
        shapes = [{**a, "segmentation": s} for a, s in zip(anns, segs, strict=True)]
        doc = _coco_doc(cats, shapes, h, w)
        source = open_source(str(_coco_dir(tmp_path / form, doc)), "train", ignore_index=255)
        assert source.class_names == ["background", "table", "donut"]
        np.testing.assert_array_equal(source.load(0)[1], expected, err_msg=form)
    _image(tmp_path / "folder" / "images" / "t.png", h, w)
    _mask(tmp_path / "folder" / "masks" / "t.png", expected)
    voc = tmp_path / "voc"
    _image(voc / "JPEGImages" / "t.jpg", h, w)
    _mask(voc / "SegmentationClass" / "t.png", expected, mode="P")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("t\n")
    for root in (tmp_path / "folder", voc):
        mask = open_source(str(root), "train", ignore_index=255).load(0)[1]
        np.testing.assert_array_equal(mask, expected, err_msg=root.name)


def test_pad_collate_fills_void():
    a = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long))
    b = (torch.ones(3, 4, 1), torch.ones(4, 1, dtype=torch.long))
    images, masks = pad_collate([a, b], ignore_index=7)
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert (
        (masks[0, 2:] == 7).all()
        and (masks[1, :, 1:] == 7).all()
        and images[1, :, :, 1:].sum() == 0
    )


def test_train_tool_reports_a_mask_size_mismatch_as_one_error_line(tmp_path, capsys):
    """tools/train.py on a mask smaller than its image: exit 2 and one ``error:`` line naming
    both files and both sizes, not a traceback."""
    from test_export_roundtrip import load_tool

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "masks" / "a.png")
    args = ["--task", "segment", "--out", str(tmp_path / "run"), f"data.train={tmp_path}",
            f"data.val={tmp_path}", "data.num_classes=2", "train.batch_size=1",
            "data.crop_size=32"]  # fmt: skip
    code = load_tool("train").main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "60x40 (WxH) differs" in err
    assert "60x50" in err and not (tmp_path / "run" / "last.pt").exists()


def test_val_dataset_alone_never_decodes_training_images(tmp_path):
    """tools/eval.py and the export checks build only the validation set: with
    data.in_memory the training set would otherwise be decoded (here: fail) for nothing."""
    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val")
    (train / "images" / "im0.jpg").write_bytes(b"not a jpeg")
    cfg = SegmentConfig()
    cfg.data.train, cfg.data.val = str(train), str(val)
    cfg.data.num_classes, cfg.data.in_memory = 3, True
    task = SegmentTask(cfg)
    assert len(task.build_val_dataset()) == 3 and task.class_names == ["0", "1", "2"]
    with pytest.raises(Exception, match="im0.jpg"):
        task.build_datasets()  # training does decode (and check) every training pair


def _task(**data) -> SegmentTask:
    cfg = SegmentConfig()
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return SegmentTask(cfg)


def _binary_folder(root: Path, suffix: str = ".png", mask_stem: str = "{}") -> Path:
    for i in range(4):
        _image(root / "images" / f"im{i}.jpg", 16, 16)
        white = np.zeros((16, 16), dtype=np.uint8)
        white[4:12, 4 + i : 10 + i] = 255  # black background, white object
        Image.fromarray(white).save(root / "masks" / (mask_stem.format(f"im{i}") + suffix))
    return root


def test_black_and_white_masks_need_mask_values(tmp_path):
    """0/255 masks: 255 is the default void value, so the object would vanish; say how to
    read them, and read them with data.mask_values=[0, 255]."""
    (tmp_path / "d" / "masks").mkdir(parents=True)
    root = _binary_folder(tmp_path / "d")
    with pytest.raises(DataError, match=r"values \[0\] and 255: one class.*mask_values=\[0,255\]"):
        _task(train=str(root)).build_datasets()
    task = _task(train=str(root), mask_values=[0, 255])
    train, val = task.build_datasets()
    assert task.class_names == ["0", "1"]
    mask = train.raw(0)[1]
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_jpeg_masks_are_snapped_to_the_listed_values_or_refused(tmp_path):
    (tmp_path / "d" / "masks").mkdir(parents=True)
    root = _binary_folder(tmp_path / "d", suffix=".jpg")
    with pytest.raises(DataError, match=r"im0\.jpg' is a JPEG.*mask_values"):
        _task(train=str(root), num_classes=2).build_datasets()[0].raw(0)
    task = _task(train=str(root), mask_values=[0, 255])
    train, _ = task.build_datasets()
    mask = train.raw(0)[1]
    assert set(np.unique(mask).tolist()) == {0, 1}  # JPEG ringing snapped to 0 or 255
    assert mask[8, 7] == 1 and mask[0, 0] == 0


def test_masks_named_with_a_suffix_and_hidden_files(tmp_path, capsys):
    (tmp_path / "d" / "masks").mkdir(parents=True)
    root = _binary_folder(tmp_path / "d", mask_stem="{}_mask")
    (root / "masks" / "._im0_mask.png").write_bytes(b"\0\1")  # macOS metadata, not a mask
    (root / "masks" / "orphan.png").write_bytes((root / "masks" / "im0_mask.png").read_bytes())
    source = open_source(str(root), "train", ignore_index=255, mask_values=[0, 255])
    assert [m.name for _, m in source.pairs] == [f"im{i}_mask.png" for i in range(4)]
    assert "1 mask(s)" in capsys.readouterr().out


def test_files_sharing_a_stem_are_not_paired_by_guess(tmp_path):
    """Images and masks pair by stem: two images with one stem would share a mask, two masks
    with one stem (or 0.png beside 0_mask.png) would leave the pairing to file order."""
    (tmp_path / "d" / "masks").mkdir(parents=True)
    root = _binary_folder(tmp_path / "d")
    mask = root / "masks" / "im0.png"
    (root / "masks" / "im0_mask.png").write_bytes(mask.read_bytes())
    with pytest.raises(DataError, match=r"im0\.jpg' fits several masks \['im0.png', 'im0_mask"):
        open_source(str(root), "train", ignore_index=255, mask_values=[0, 255])
    (root / "masks" / "im0_mask.png").unlink()
    Image.open(mask).save(root / "masks" / "im0.bmp")
    with pytest.raises(DataError, match=r"im0\.bmp' and .*im0\.png' share the stem 'im0'"):
        open_source(str(root), "train", ignore_index=255, mask_values=[0, 255])
    (root / "masks" / "im0.bmp").unlink()
    Image.open(root / "images" / "im0.jpg").save(root / "images" / "im0.png")
    with pytest.raises(DataError, match=r"im0\.jpg' and .*im0\.png' share the stem"):
        open_source(str(root), "train", ignore_index=255, mask_values=[0, 255])


def test_sparse_labels_are_refused_and_class_names_set_the_space(tmp_path):
    root = _folder(tmp_path / "d")
    with pytest.raises(DataError, match=r"\[1, 2, 255\].*256 classes, 253 of them"):
        _task(train=str(root), ignore_index=0).build_datasets()
    task = _task(train=str(root), class_names=["bg", "a", "b", "c"])  # masks hold 0..2 only
    task.build_datasets()
    assert task.class_names == ["bg", "a", "b", "c"]


def test_palette_png_masks_follow_data_palette_colours(tmp_path):
    """An editor may re-save RGB masks as palette PNGs with its own colour order: with
    data.palette the colours, not the stored indices, are the labels."""
    root = _folder(tmp_path / "d", sizes=((6, 5),))
    stored = np.zeros((6, 5), dtype=np.uint8)
    stored[:3] = 1  # index 1 = black in this file's palette, index 0 = red
    img = Image.fromarray(stored, mode="L")
    img.putpalette([128, 0, 0, 0, 0, 0] + [0] * 762)
    img.save(root / "masks" / "im0.png")
    _, mask = _dataset(root, palette=[[0, 0, 0], [128, 0, 0]])[0]
    assert (mask[:3] == 0).all() and (mask[3:] == 1).all()


def test_mask_turned_by_exif_is_explained(tmp_path):
    root = _folder(tmp_path / "d", sizes=((6, 5),))
    _mask(root / "masks" / "im0.png", np.zeros((5, 6)))
    with pytest.raises(DataError, match="6x5.*5x6.*swapped.*EXIF orientation"):
        _dataset(root)[0]


def test_voc_lists_with_a_bom_png_images_and_missing_images(tmp_path):
    root = tmp_path / "VOC"
    for name in ("a", "b"):
        _image(root / "JPEGImages" / f"{name}.png", 12, 10)
        _mask(root / "SegmentationClass" / f"{name}.png", _labels(12, 10), mode="P")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\ufeffa\r\nb\r\n")
    source = open_source(str(root), "train", ignore_index=255)
    assert [i.name for i, _ in source.pairs] == ["a.png", "b.png"]
    (root / "JPEGImages" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt' have no image.*b\.jpg"):
        open_source(str(root), "train", ignore_index=255)


def test_a_class_name_used_twice_is_refused(tmp_path):
    """per_class_iou is keyed by name: ["bg", "x", "x"] wrote two IoUs for three classes,
    the second "x" overwriting the first."""
    cfg = SegmentConfig()
    cfg.data.train = str(_folder(tmp_path / "d"))
    cfg.data.class_names = ["bg", "x", "x"]
    with pytest.raises(ConfigError, match=r"data.class_names=.* names classes \[1, 2\] 'x'"):
        SegmentTask(cfg).build_datasets()


def _coco_doc(cats, anns, height=20, width=30) -> dict:
    return {
        "images": [{"id": 1, "file_name": "p.jpg", "height": height, "width": width}],
        "categories": cats,
        "annotations": anns,
    }


POLY = [[2, 2, 12, 2, 12, 8, 2, 8]]


def _coco_dir(root: Path, doc: dict, name: str = "annotations.json") -> Path:
    _image(root / "images" / "p.jpg", 20, 30)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(doc))
    return root


def test_coco_validation_categories_are_matched_by_name(tmp_path):
    train = _coco_dir(
        tmp_path / "train",
        _coco_doc([{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
                  [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": POLY}]),
    )  # fmt: skip
    val = _coco_dir(
        tmp_path / "val",
        _coco_doc([{"id": 1, "name": "dog"}],  # other ids, fewer categories
                  [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": POLY}]),
        name="annotations/instances_val.json",
    )  # fmt: skip
    task = _task(train=str(train), val=str(val))
    _, val_set = task.build_datasets()
    assert task.class_names == ["background", "cat", "dog"]
    assert val_set.raw(0)[1][4, 4] == 2  # dog, as in training
    bird = _coco_dir(
        tmp_path / "bird",
        _coco_doc([{"id": 1, "name": "bird"}],
                  [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": POLY}]),
    )  # fmt: skip
    with pytest.raises(DataError, match=r"annotations\[0\]: category 'bird' .* not one of the"):
        _task(train=str(train), val=str(bird)).build_datasets()
    listed = _coco_dir(  # a label of the project that no mask uses (CVAT lists them all)
        tmp_path / "listed",
        _coco_doc([{"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}],
                  [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": POLY}]),
    )  # fmt: skip
    _, val_set = _task(train=str(train), val=str(listed)).build_datasets()
    assert val_set.raw(0)[1][4, 4] == 2


def test_roboflow_group_category_is_not_a_class(tmp_path):
    """Roboflow's COCO export puts the data set's name first, as the supercategory of the
    real classes and used by no annotation: it is no class (the model would carry a class no
    mask ever has). A group that annotations do use stays a class."""
    cats = [{"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"}]  # fmt: skip
    ann = {"id": 1, "image_id": 1, "category_id": 2, "segmentation": POLY}
    root = _coco_dir(tmp_path / "rf", _coco_doc(cats, [ann]), name="_annotations.coco.json")
    task = _task(train=str(root), val=str(root))
    _, val_set = task.build_datasets()
    assert task.class_names == ["background", "cat", "dog"]
    assert val_set.raw(0)[1][4, 4] == 2
    used = _coco_dir(tmp_path / "used", _coco_doc(cats, [ann, {**ann, "id": 2, "category_id": 0}]))
    task = _task(train=str(used), val=str(used))
    task.build_datasets()
    assert task.class_names == ["background", "pets", "cat", "dog"]


@pytest.mark.parametrize(
    "ann, message",
    [
        ({}, "no 'segmentation' polygon or RLE.*--task detect"),
        ({"segmentation": []}, "no 'segmentation'"),
        ({"segmentation": [[1, 1, 20, 20]]}, r"polygon \[1, 1, 20, 20\] is not a list of 3"),
        ({"category_id": 99, "segmentation": POLY}, "category_id 99 is not in 'categories'"),
        ({"segmentation": {"counts": "abc", "size": [48, 30]}}, r"RLE size \[48, 30\]"),
        # counts that do not cover the 20 x 30 image: pycocotools reads past them (random
        # labels) or fails inside a DataLoader worker
        *[
            ({"segmentation": {"counts": c, "size": [20, 30]}}, "adding up to .* = 600")
            for c in ("", [100, 50], [700], [-5, 605], None, "~~", "P", "PP2", [1.5, 598.5])
        ],
        ({"segmentation": {"counts": [100, 50], "size": [20, 30]}}, "add up to 150; expected"),
        ({"segmentation": POLY, "area": "n/a"}, "area is 'n/a', expected a number"),
    ],
)
def test_coco_annotations_that_cannot_be_rendered_are_named(tmp_path, ann, message):
    doc = _coco_doc([{"id": 3, "name": "cat"}], [{"id": 5, "image_id": 1, "category_id": 3, **ann}])
    root = _coco_dir(tmp_path, doc)
    with pytest.raises(DataError, match=r"annotations\[0\].*" + message):
        open_source(str(root), "train", ignore_index=255)


def test_coco_rle_counts_written_as_whole_floats_are_read(tmp_path):
    """Some exporters write counts as 300.0; pycocotools reads them as integers."""
    seg = {"counts": [300.0, 300.0], "size": [20, 30]}  # left half of the columns: 0, right: 1
    ann = {"id": 5, "image_id": 1, "category_id": 3, "segmentation": seg, "area": "300"}
    root = _coco_dir(tmp_path, _coco_doc([{"id": 3, "name": "cat"}], [ann]))
    mask = open_source(str(root), "train", ignore_index=255).load_mask(0)
    assert mask[:, :15].max() == 0 and (mask[:, 15:] == 1).all()


def test_coco_string_ids_and_repeated_ids(tmp_path):
    """Ids written as strings ("1") are the same ids for the rendering; an id twice is an
    error (it would drop one image and draw its objects on the other)."""
    ann = {"id": 1, "image_id": "1", "category_id": 3, "segmentation": POLY}
    doc = _coco_doc([{"id": "3", "name": "cat"}], [ann])
    doc["images"][0]["id"] = 1
    source = open_source(str(_coco_dir(tmp_path / "a", doc)), "train", ignore_index=255)
    assert source.load_mask(0)[4, 4] == 1
    doc["images"].append({**doc["images"][0], "file_name": "p.jpg"})
    with pytest.raises(DataError, match=r"images\[1\]: id 1 repeats"):
        open_source(str(_coco_dir(tmp_path / "b", doc)), "train", ignore_index=255)


def test_class_names_must_fit_a_coco_label_space(tmp_path):
    doc = _coco_doc([{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
                    [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": POLY}])  # fmt: skip
    root = _coco_dir(tmp_path, doc)
    with pytest.raises(ConfigError, match="class_names has 2 names but the label space has 3"):
        _task(train=str(root), val=str(root), class_names=["cat", "dog"]).build_datasets()


def test_one_bit_masks_and_palette_pngs_keep_their_void(tmp_path):
    root = _folder(tmp_path / "d", sizes=((6, 5),))
    bits = np.zeros((6, 5), dtype=bool)
    bits[:2] = True
    Image.fromarray(bits).save(root / "masks" / "im0.png")  # mode "1": reads 0/1
    source = open_source(str(root), "train", ignore_index=255, mask_values=[0, 255])
    assert source.load_mask(0)[:2].min() == 1 and source.load_mask(0)[2:].max() == 0
    stored = np.zeros((6, 5), dtype=np.uint8)
    stored[0] = 255  # VOC's void index, coloured (224, 224, 192) by the file's palette
    img = Image.fromarray(stored, mode="L")
    img.putpalette([0] * 765 + [224, 224, 192])
    img.save(root / "masks" / "im0.png")
    _, mask = _dataset(root, palette=[[0, 0, 0], [128, 0, 0]])[0]
    assert (mask[0] == 255).all() and (mask[1:] == 0).all()


def test_eval_of_a_trained_model_opens_only_data_val(tmp_path):
    """With the classes known (a checkpoint was loaded), tools/eval.py data.val=DIR must
    not need the training data any more (here: a COCO folder that is gone)."""
    val = _folder(tmp_path / "val")
    task = _task(train=str(tmp_path / "gone"), val=str(val))
    task.class_names = ["0", "1", "2"]
    assert len(task.build_val_dataset()) == 3


def test_images_in_sub_folders_pair_with_masks_in_the_same_sub_folders(tmp_path):
    """images/a/x.jpg pairs with masks/a/x.png (they were silently left out); an image in a
    sub-folder without its mask is named, not dropped."""
    root = _folder(tmp_path / "d")
    _image(root / "images" / "sub" / "deep" / "n0.jpg", 12, 14)
    _mask(root / "masks" / "sub" / "deep" / "n0_mask.png", _labels(12, 14))
    (tmp_path / "elsewhere").mkdir()
    _image(tmp_path / "elsewhere" / "n1.jpg", 10, 10)
    _mask(root / "masks" / "linked" / "n1.png", _labels(10, 10))
    (root / "images" / "linked").symlink_to(tmp_path / "elsewhere")
    source = open_source(str(root), "train", ignore_index=255)
    names = [(str(i.relative_to(root)), str(m.relative_to(root))) for i, m in source.pairs]
    assert names[3:] == [
        ("images/linked/n1.jpg", "masks/linked/n1.png"),
        ("images/sub/deep/n0.jpg", "masks/sub/deep/n0_mask.png"),
    ]
    _image(root / "images" / "sub" / "n2.jpg", 10, 10)
    with pytest.raises(FileNotFoundError, match=r"sub-folder.*\['sub/n2.jpg'\]"):
        open_source(str(root), "train", ignore_index=255)


def test_voc_masks_with_an_upper_case_extension(tmp_path):
    root = tmp_path / "voc"
    for name in ("a", "b"):
        _image(root / "JPEGImages" / f"{name}.JPG", 10, 12)
        _mask(root / "SegmentationClass" / f"{name}.PNG", _labels(10, 12))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    source = open_source(str(root), "train", ignore_index=255)
    assert [m.name for _, m in source.pairs] == ["a.PNG", "b.PNG"]


def test_max_size_only_shrinks_training_images_as_evaluation_does():
    """data.max_size caps the longest side; a smaller image keeps its size in training, as in
    evaluation (albumentations' LongestMaxSize enlarged it: trained at another scale)."""
    from tasks.segment.augment import build_transform

    t = build_transform(train=True, ignore_index=255, crop_size=0, max_size=40, scale=(1.0, 1.0),
                        hflip=0, color_jitter=0)  # fmt: skip
    mask = np.zeros((20, 30), dtype=np.int64)
    assert tuple(t(np.zeros((20, 30, 3), np.uint8), mask)[1].shape) == (20, 30)
    mask = RNG.integers(0, 3, (100, 30))
    x, m = t(np.zeros((100, 30, 3), np.uint8), mask)
    assert tuple(x.shape) == (3, 40, 12) and set(m.unique().tolist()) <= {0, 1, 2}


def test_an_image_scaled_to_nothing_is_named(tmp_path):
    """A 1-pixel side shrunk by data.scale: one error naming the files, not cv2's assertion."""
    from tasks.segment.augment import build_transform

    root = tmp_path / "d"
    _image(root / "images" / "thin.png", 1, 40)
    _mask(root / "masks" / "thin.png", np.ones((1, 40)))
    source = open_source(str(root), "train", ignore_index=255)
    ds = SegmentationDataset(
        source, num_classes=3, ignore_index=255,
        transform=build_transform(train=True, ignore_index=255, crop_size=8),
    )  # fmt: skip
    with pytest.raises(DataError, match=r"thin\.png.*40x1 pixels.*data\.scale"):
        ds[0]
