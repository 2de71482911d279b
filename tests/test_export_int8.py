"""int8 export (``tools/export_onnx.py --int8 CALIB_DIR --val DIR``) of segmentation and
Faster R-CNN checkpoints trained for a few steps on synthetic shapes: the graph holds QDQ
nodes, post-processing stays float, ONNX Runtime runs it and the tool reports both models'
metric on a generated validation folder (segmentation: int8 mIoU within 0.05 of fp32)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from test_export_roundtrip import load_tool, make_checkpoint

from tasks import load_model
from tasks.checkpoint import read_weights, save_weights
from tasks.export.evaluate import _classify, _detect
from tasks.export.quantize import CALIBRATION_IMAGES, calibration_files
from tasks.shapes import SHAPE_CLASSES, make_shapes_sample, semantic_mask

# Small, fast models (one training step takes well under a second on one core).
SEGMENT = ["model.backbone=resnet20", "model.head=fcn", "model.norm=groupnorm",
           "data.synthetic_size=48", "data.synthetic_train=16", "data.scale=[1.0,1.0]",
           "data.color_jitter=0.0", "data.hflip=0.0", "data.crop_size=48"]  # fmt: skip
DETECT = ["data.shapes_size=64", "data.shapes_train=8", "model.min_size=64", "model.max_size=64",
          "model.fpn_channels=32", "model.out_indices=[3,4]", "model.anchor_sizes=[16,32,64]",
          "model.rpn_post_nms_top_n_train=50", "model.box_batch_size_per_image=32",
          "data.augment.hflip=0"]  # fmt: skip
# inputs that must never be int8-rounded: boxes and scores of NMS, the ranked scores of TopK,
# the RoI boxes of RoiAlign (feature maps, Resize included, may be int8 in the neck)
POSTPROCESS_FLOAT_INPUTS = {"NonMaxSuppression": (0, 1), "TopK": (0,), "RoiAlign": (1, 2)}
REPORT = re.compile(r"(\w+) fp32 ([\d.]+) -> int8 ([\d.]+) .*latency ([\d.]+) -> ([\d.]+) ms")


def trained_checkpoint(tmp_path: Path, task_name: str, steps: int, overrides: list[str]) -> Path:
    """``make_checkpoint`` then ``steps`` AdamW steps on the task's synthetic training set, so
    that int8 rounding meets a model with real (not uniform) scores."""
    torch.manual_seed(0)
    path = make_checkpoint(tmp_path, task_name, *overrides)
    model, task = load_model(path)
    train_set, _ = task.build_datasets()
    batches = [task.collate([train_set[i] for i in range(j, j + 4)]) for j in (0, 4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        loss = task.train_step(model, batches[step % 2], torch.device("cpu"))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_weights(path, model.state_dict(), read_weights(path)[1])
    return path


def write_segment_folder(root: Path, count: int, seed: int, size: int) -> Path:
    """``root/images/*.png`` + ``root/masks/*.png`` (index masks) of synthetic shapes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        sample = make_shapes_sample(i, seed=seed, size=size)
        Image.fromarray(sample.image).save(root / "images" / f"{i}.png")
        Image.fromarray(semantic_mask(sample)).save(root / "masks" / f"{i}.png")
    return root


def write_coco_folder(root: Path, count: int, seed: int, size: int) -> Path:
    """``root/images/*.png`` + ``root/annotations.json`` (COCO boxes) of synthetic shapes."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        sample = make_shapes_sample(i, seed=seed, size=size)
        Image.fromarray(sample.image).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": size, "height": size})
        for (x1, y1, x2, y2), label in zip(sample.boxes.tolist(), sample.labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})  # fmt: skip
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(SHAPE_CLASSES)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def export_int8(ckpt: Path, out: Path, calib: Path, val: Path, capsys) -> dict[str, float]:  # noqa: ANN001
    """Run the tool (static shape, parity is covered elsewhere); return the parsed report."""
    args = [str(ckpt), "--output", str(out), "--skip-parity", "--int8", str(calib)]
    assert load_tool("export_onnx").main([*args, "--val", str(val)]) == 0
    name, fp32, int8, ms32, ms8 = REPORT.search(capsys.readouterr().out).groups()
    print(f"{ckpt.stem}: {name} {fp32} -> {int8}; CPU batch-1 {ms32} -> {ms8} ms")
    return {"fp32": float(fp32), "int8": float(int8)}


def assert_qdq_with_float_postprocessing(path: Path) -> None:
    """QDQ nodes feed the convolutions; no ``POSTPROCESS_FLOAT_INPUTS`` and no graph output
    comes straight from a DequantizeLinear."""
    model = onnx.load(str(path))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    conv_inputs = [producer.get(n.input[0]) for n in model.graph.node if n.op_type == "Conv"]
    assert conv_inputs.count("DequantizeLinear") >= len(conv_inputs) - 2  # all but the heads'
    for node in model.graph.node:
        for i in POSTPROCESS_FLOAT_INPUTS.get(node.op_type, ()):
            assert producer.get(node.input[i]) != "DequantizeLinear", (node.name, i)
    assert all(producer.get(o.name) != "DequantizeLinear" for o in model.graph.output)
    assert read_meta(model)["precision"] == "int8"


def read_meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_segment_int8_keeps_miou(tmp_path, capsys):
    ckpt = trained_checkpoint(tmp_path, "segment", 16, SEGMENT)
    calib = write_segment_folder(tmp_path / "calib", 8, seed=1, size=48)
    val = write_segment_folder(tmp_path / "val", 12, seed=2, size=48)
    report = export_int8(ckpt, tmp_path / "m.onnx", calib, val, capsys)
    assert_qdq_with_float_postprocessing(tmp_path / "m.onnx")
    assert report["fp32"] > 0.2  # a model that learned something, so the bound means something
    assert abs(report["int8"] - report["fp32"]) <= 0.05


def test_detect_int8_exports_with_float_postprocessing(tmp_path, capsys):
    """The int8 detector is built, keeps NMS and box post-processing float, runs in ORT and
    is scored with COCO AP beside the fp32 model. Its accuracy is not bounded here: a detector
    trained for seconds gives every image nearly the same low scores (top fp32 scores ~0.2
    over 4 classes), so int8 rounding reorders them and no bound on AP or boxes would mean
    anything. The report is what a user reads on their own trained model."""
    ckpt = trained_checkpoint(tmp_path, "detect", 12, DETECT)
    calib = write_coco_folder(tmp_path / "calib", 8, seed=1, size=64)
    val = write_coco_folder(tmp_path / "val", 8, seed=2, size=64)
    report = export_int8(ckpt, tmp_path / "m.onnx", calib, val, capsys)
    assert_qdq_with_float_postprocessing(tmp_path / "m.onnx")
    assert sum(n.op_type == "NonMaxSuppression" for n in onnx.load(tmp_path / "m.onnx").graph.node)
    assert 0.0 <= report["int8"] <= 1.0 and 0.0 <= report["fp32"] <= 1.0


def test_val_report_numbers_classes_as_the_model_does(tmp_path):
    """A ``--val`` COCO file whose category ids order the classes differently from training
    is read with the model's classes: a detector that returns the ground truth in the model's
    own label order scores AP 1.0 (it scored ~0.01 when the folder's order was used)."""
    _, task = load_model(make_checkpoint(tmp_path, "detect", *DETECT))
    val = write_coco_folder(tmp_path / "val", 6, seed=2, size=64)
    coco = json.loads((val / "annotations.json").read_text())
    renumber = {1: 3, 2: 1, 3: 2}  # circle -> id 3, square -> id 1, triangle -> id 2
    for entry in coco["categories"]:
        entry["id"] = renumber[entry["id"]]
    for ann in coco["annotations"]:
        ann["category_id"] = renumber[ann["category_id"]]
    (val / "annotations.json").write_text(json.dumps(coco))
    truths = iter([make_shapes_sample(i, seed=2, size=64) for i in range(6)])

    def perfect_detector(image: np.ndarray) -> list[dict[str, np.ndarray]]:
        sample = next(truths)
        labels = np.asarray(sample.labels, dtype=np.int64)  # 1-based in SHAPE_CLASSES order
        return [{"boxes": sample.boxes.astype(np.float32), "labels": labels,
                 "scores": np.ones(len(labels), dtype=np.float32)}]  # fmt: skip

    assert task.class_names == list(SHAPE_CLASSES)
    assert _detect(perfect_detector, task, val, limit=6) == pytest.approx(1.0)


def test_classify_report_scores_images_spread_over_every_class(tmp_path):
    """The report's image limit takes images spread over the folder, not its first ones:
    an ImageFolder lists class by class, so the first images are the first classes only.
    A model that always answers "b" scores 0 on the first 2 of (a, a, a, b, b, b), 0.5 on
    a spread of 2."""
    for i in range(6):
        folder = tmp_path / ("a" if i < 3 else "b")
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    task = type("Task", (), {"class_names": ["a", "b"]})()

    def always_b(paths: list) -> list[dict[str, np.ndarray]]:
        return [{"probs": np.array([0.1, 0.9])} for _ in paths]

    assert _classify(always_b, task, tmp_path, limit=2) == pytest.approx(0.5)
    assert _classify(always_b, task, tmp_path, limit=100) == pytest.approx(0.5)


def test_calibration_takes_images_spread_over_every_class(tmp_path):
    """Calibration reads at most CALIBRATION_IMAGES files, taken over the whole folder: a
    class-by-class ImageFolder of 3 x 40 images gives files of all three classes, where its
    first 64 would be two classes and none of the third."""
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for i in range(40):
            (tmp_path / name / f"{i:02d}.png").write_bytes(b"")
    files = calibration_files(tmp_path)
    assert len(files) == CALIBRATION_IMAGES
    assert {p.parent.name for p in files} == {"a", "b", "c"}
    assert sum(p.parent.name == "c" for p in files) >= CALIBRATION_IMAGES // 3


@pytest.mark.parametrize(
    "make, says",
    [("missing", "is not a folder"), ("empty", "holds no images"), ("corrupt", "bad.jpg")],
)
def test_bad_calibration_folder_is_one_clear_error(tmp_path, capsys, make, says):
    """A missing or empty folder fails before the export; a file that does not decode fails
    when calibration reads it, naming the file; neither leaves a model behind (exit 2)."""
    calib = tmp_path / "calib"
    if make != "missing":
        calib.mkdir()
        (calib / "notes.txt").write_text("no images here")
    if make == "corrupt":
        (calib / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    ckpt = make_checkpoint(tmp_path, "classify")
    code = load_tool("export_onnx").main(
        [str(ckpt), "--output", str(tmp_path / "m.onnx"), "--int8", str(calib)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and str(calib) in err and says in err
    assert not (tmp_path / "m.onnx").exists()
