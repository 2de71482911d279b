"""The detection task gives an image the same detections whatever else runs beside it."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader

from heads.base import HeadOutput
from tasks import TASKS
from tasks.detect.config import DetectConfig
from tasks.detect.metrics import SUMMARY_KEYS


def _task_and_model():
    cfg = OmegaConf.structured(DetectConfig)
    cfg.merge_with_dotlist(
        ["model.min_size=64", "model.max_size=128", "model.fpn_channels=32",
         "model.out_indices=[3,4]", "model.anchor_sizes=[16,32,64]", "model.score_thresh=0.0"]
    )  # fmt: skip
    task = TASKS.create("detect", cfg=cfg)
    task.class_names, task.category_ids = ["a", "b", "c"], [1, 2, 3]
    torch.manual_seed(0)
    return task, task.build_model().eval()


def test_detections_do_not_depend_on_the_other_images_of_the_batch():
    """A batch pads its images to the largest one; the default detector normalises its FPN
    with GroupNorm, whose statistics then include that padding. Evaluation batches the
    validation set while tools/predict.py and the ONNX graph run each image alone, so each
    image must get the detections it gets alone (same-size images may still share a batch)."""
    task, model = _task_and_model()
    gen = torch.Generator().manual_seed(1)
    wide, square, wide2 = (
        torch.rand(3, h, w, generator=gen) for h, w in ((64, 128), (48, 48), (64, 128))
    )
    batched = task.detect(model, [wide, square, wide2])
    for image, got in zip((wide, square, wide2), batched, strict=True):
        alone = task.detect(model, [image])[0]
        assert len(alone["boxes"]) > 0
        torch.testing.assert_close(got, alone, atol=1e-4, rtol=0)


class _Oracle(nn.Module):
    """A detector that returns given boxes (label 1, score 1) for images of a given size."""

    def __init__(self, boxes_by_size: dict[tuple[int, int], list[list[float]]]) -> None:
        super().__init__()
        self.boxes_by_size = boxes_by_size

    def forward(self, images: list[torch.Tensor]) -> HeadOutput:
        preds = []
        for image in images:
            boxes = torch.tensor(self.boxes_by_size[tuple(image.shape[-2:])])
            n = len(boxes)
            preds.append(dict(boxes=boxes, scores=torch.ones(n), labels=torch.ones(n, dtype=int)))
        return HeadOutput(preds=preds, losses={})


def test_area_ranges_use_the_coco_files_areas_as_cocoeval_on_the_file_does(tmp_path):
    """COCO files give each object's mask area; pycocotools' small/medium/large AP ranges read
    it, so APs/APm/APl must match COCOeval run on the annotation file itself, not the boxes'
    areas (a 50 x 50 box around a 600-pixel person is "small" there, "medium" by its box)."""
    images = [dict(id=4, file_name="a.png", width=200, height=200),
              dict(id=8, file_name="b.png", width=160, height=200)]  # fmt: skip
    anns = [  # a: mask area 600 (small) in a medium box; b: no area given, a large box
        dict(id=1, image_id=4, category_id=5, bbox=[10, 10, 50, 50], area=600, iscrowd=0),
        dict(id=2, image_id=8, category_id=5, bbox=[20, 30, 100, 100], iscrowd=0),
    ]
    (tmp_path / "images").mkdir()
    for im in images:
        Image.new("RGB", (im["width"], im["height"])).save(tmp_path / "images" / im["file_name"])
    coco_json = tmp_path / "annotations.json"
    coco_json.write_text(json.dumps(dict(images=images, annotations=anns,
                                         categories=[dict(id=5, name="person")])))  # fmt: skip
    cfg = OmegaConf.structured(DetectConfig)
    cfg.merge_with_dotlist([f"data.train={tmp_path}", f"data.val={tmp_path}"])
    task = TASKS.create("detect", cfg=cfg)
    task.class_names = ["person"]
    val_set = task.build_val_dataset()
    oracle = _Oracle({(200, 200): [[10, 10, 60, 60]], (200, 160): [[20, 30, 120, 130]]})
    loader = DataLoader(val_set, batch_size=2, collate_fn=task.collate)
    metrics = task.evaluate(oracle, loader, torch.device("cpu"))
    assert [metrics[k] for k in ("APs", "APm", "APl")] == pytest.approx([1.0, -1.0, 1.0])

    # the reference reads the file, b given its box area (pycocotools needs every area)
    data = json.loads(coco_json.read_text())
    data["annotations"][1]["area"] = 100 * 100
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = data
        truth.createIndex()
        found = truth.loadRes([dict(a, score=1.0) for a in anns])  # the boxes, found exactly
        reference = COCOeval(truth, found, "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert [metrics[k] for k in SUMMARY_KEYS] == pytest.approx(list(reference.stats))
