"""Whole-image segmentation inference (``tasks.segment.infer.predict_logits``): sizes, sliding
windows, flip TTA, running at the training scale (``max_size``), and the ONNX export module
doing the same steps; the mask files ``tools/predict.py`` writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from tasks.export.wrappers import SegmentExport
from tasks.segment import draw
from tasks.segment.augment import MEAN, STD
from tasks.segment.config import SegmentConfig
from tasks.segment.infer import predict_logits, scaled_size
from tasks.segment.masks import read_mask
from tasks.segment.task import SegmentTask


class PixelModel(nn.Module):
    """A per-pixel linear model (1x1 conv) that records the input sizes it was given: its
    logits do not depend on neighbours, so windows and flips must not change them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: Tensor):  # noqa: ANN201 - the .preds the segmentation model returns
        self.seen.append(tuple(x.shape[-2:]))
        return type("Out", (), {"preds": self.conv(x)})()


def test_windows_and_flips_leave_a_per_pixel_model_unchanged():
    model, x = PixelModel(), torch.randn(2, 3, 45, 70)
    whole = predict_logits(model, x, multiple=8)
    assert whole.shape == (2, 4, 45, 70)
    torch.testing.assert_close(whole, model.conv(x))
    windowed = predict_logits(model, x, multiple=8, window=32, flip=True)
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=1e-5)
    assert all(h <= 32 and w <= 32 for h, w in model.seen[1:])  # padding keeps windows at 32


def test_max_size_runs_the_model_at_the_training_scale_and_answers_at_input_size():
    assert scaled_size(100, 60, 50) == (50, 30)
    assert scaled_size(100, 60, 0) == scaled_size(100, 60, 200) == (100, 60)
    model, x = PixelModel(), torch.randn(1, 3, 100, 60)
    logits = predict_logits(model, x, multiple=1, max_size=50)
    assert model.seen == [(50, 30)] and logits.shape == (1, 4, 100, 60)
    small = model.conv(F.interpolate(x, size=(50, 30), mode="bilinear", align_corners=False))
    expected = F.interpolate(small, size=(100, 60), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)
    model.seen.clear()
    torch.testing.assert_close(predict_logits(model, x, multiple=1, max_size=100), model.conv(x))
    assert model.seen == [(100, 60)]


def test_scales_average_the_logits_of_each_scale_resized_back():
    assert scaled_size(100, 60, 50, 1.5) == (75, 45)  # shrink to 50, then 1.5x
    assert scaled_size(100, 60, 0, 0.5) == (50, 30)
    model, x = PixelModel(), torch.randn(1, 3, 100, 60)
    logits = predict_logits(model, x, multiple=1, max_size=50, scales=(1.0, 1.5))
    assert model.seen == [(50, 30), (75, 45)] and logits.shape == (1, 4, 100, 60)

    def resize(t: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    expected = sum(resize(model.conv(resize(x, size)), (100, 60)) for size in ((50, 30), (75, 45)))
    torch.testing.assert_close(logits, expected / 2)


def test_export_module_shrinks_to_max_size_like_eager_inference():
    cfg = SegmentConfig()
    cfg.model.backbone, cfg.model.head, cfg.model.channels = "resnet18", "deeplabv3plus", 32
    cfg.data.synthetic_train, cfg.data.synthetic_val, cfg.data.max_size = 2, 2, 40
    task = SegmentTask(cfg)
    task.build_datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    assert model.head.classifier.in_channels == 32  # model.channels reached the decoder
    image = torch.randint(0, 256, (1, 3, 64, 52), dtype=torch.uint8)
    export = SegmentExport(model, MEAN, STD, multiple=16, max_size=40).eval()
    _assert_export_matches_eager(export, task, model, image)
    cfg.data.eval_flip, cfg.data.eval_scales = True, [1.0, 1.3]  # flip + multi-scale TTA
    export = SegmentExport(model, MEAN, STD, 16, True, 40, cfg.data.eval_scales).eval()
    _assert_export_matches_eager(export, task, model, image)
    cfg.data.max_size = 0  # scales of the input size itself
    export = SegmentExport(model, MEAN, STD, 16, True, 0, cfg.data.eval_scales).eval()
    _assert_export_matches_eager(export, task, model, image)


def _assert_export_matches_eager(export, task, model, image):
    with torch.no_grad():
        logits, labels = export(image)
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        expected = task.predict_logits(model, (image.float() / 255 - mean) / std)
    assert logits.shape == (1, 4, 64, 52) and labels.shape == (1, 64, 52)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_validation_goes_one_image_at_a_time_when_shrinking():
    """A padded batch would shrink every image by the largest one's size, not its own."""
    cfg = SegmentConfig()
    cfg.train.batch_size = 8
    val_set = SegmentTask(cfg).build_val_dataset()  # synthetic: one size
    assert SegmentTask(cfg).val_batch_size(val_set) == 8
    cfg.data.max_size = 320
    assert SegmentTask(cfg).val_batch_size(val_set) == 1
    cfg.data.max_size, cfg.data.eval_scales = 0, [1.0, 1.25]
    assert SegmentTask(cfg).val_batch_size(val_set) == 1


@pytest.mark.parametrize("num_classes", [3, 300])
def test_saved_mask_holds_every_class_index(tmp_path, num_classes):
    """``tools/predict.py``'s mask PNG reads back as the predicted labels: a palette PNG for up
    to 256 classes, 16-bit past that (uint8 used to wrap label 299 onto 43)."""
    pred = np.arange(4 * 5).reshape(4, 5) * (num_classes - 1) // 19  # 0 .. K-1
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    colours = draw.palette(num_classes)
    paths = draw.save_prediction(tmp_path, "im", image, pred, colours)
    assert Image.open(paths["mask"]).mode == ("P" if num_classes <= 256 else "I;16")
    np.testing.assert_array_equal(read_mask(Path(paths["mask"])), pred)
    assert draw.class_fractions(pred, [str(k) for k in range(num_classes)])[
        str(num_classes - 1)
    ] == pytest.approx(1 / 20)


def _folder(root: Path, sizes: list[tuple[int, int]], exif_turn: bool = False) -> Path:
    """images/ + masks/ of the given (H, W) sizes, labels 0..2 with a void corner; with
    ``exif_turn`` the first image is stored W x H with an EXIF orientation of 6 (shown H x W)."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
        labels[:2, :2] = 255
        Image.fromarray(labels).save(root / "masks" / f"im{i}.png")
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if exif_turn and i == 0:  # orientation 6: shown turned 90 degrees clockwise
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.rot90(pixels, 1).copy()).save(root / "images" / "im0.jpg", exif=exif)
        else:
            Image.fromarray(pixels).save(root / "images" / f"im{i}.png")
    return root


def test_validation_scores_what_one_image_at_a_time_predicts(tmp_path):
    """A padded batch of different-sized images changed the mIoU (ASPP pooling over the
    padding), so metrics.json did not score what tools/predict.py and the ONNX graph predict,
    and ``train.batch_size`` changed the number. Images of one size still share batches."""
    cfg = SegmentConfig()
    cfg.model.backbone, cfg.model.channels = "resnet18", 16
    cfg.data.train = cfg.data.val = str(_folder(tmp_path / "mixed", [(40, 56), (24, 72), (33, 20)]))
    cfg.data.num_classes, cfg.train.batch_size = 3, 8
    task = SegmentTask(cfg)
    _, val_set = task.build_datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    alone, loss_sum, pixels = torch.zeros(3, 3, dtype=torch.int64), 0.0, 0
    for i in range(len(val_set)):  # what tools/predict.py computes, image by image
        image, mask = val_set[i]
        logits = task.predict_logits(model, image[None])
        loss_sum += float(F.cross_entropy(logits, mask[None], ignore_index=255, reduction="sum"))
        scored = mask != 255
        pixels += int(scored.sum())
        pred = logits[0].argmax(0)
        alone += torch.bincount(mask[scored] * 3 + pred[scored], minlength=9).view(3, 3)
    size = task.val_batch_size(val_set)
    batches = [
        task.collate([val_set[j] for j in range(i, min(i + size, len(val_set)))])
        for i in range(0, len(val_set), size)
    ]
    metrics = task.evaluate(model, batches, torch.device("cpu"))
    assert torch.equal(task._matrix, alone)
    assert metrics["loss"] == pytest.approx(loss_sum / pixels, rel=1e-9)  # padded: 7e-6 off
    assert size == 1
    # one size (an EXIF-turned JPEG counted as shown): batches of train.batch_size
    cfg.data.train = cfg.data.val = str(_folder(tmp_path / "same", [(30, 20)] * 3, exif_turn=True))
    task = SegmentTask(cfg)
    assert task.val_batch_size(task.build_val_dataset()) == 8
    cfg.data.in_memory = True
    task = SegmentTask(cfg)
    assert task.val_batch_size(task.build_val_dataset()) == 8


@pytest.mark.parametrize("ignore_index", [255, 100, 1000])
def test_predict_writes_the_mask_file_infer_onnx_writes(tmp_path, ignore_index):
    """tools/predict.py and tools/infer_onnx.py write one mask file (mode, palette, values)
    and overlay for the same labels, whatever data.ignore_index (not in the ONNX metadata):
    with 1000, predict.py wrote a 16-bit greyscale mask and infer_onnx.py a palette PNG."""
    spec = importlib.util.spec_from_file_location(
        "infer_onnx", Path(__file__).resolve().parents[1] / "tools" / "infer_onnx.py"
    )
    infer_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer_onnx)
    cfg = SegmentConfig()
    cfg.data.ignore_index = ignore_index
    task = SegmentTask(cfg)
    task.class_names = ["bg", "a", "b"]
    model = PixelModel()
    model.conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        model.conv.weight.copy_(torch.eye(3)[:, :, None, None])  # class = brightest channel
        model.conv.bias.zero_()
    model.backbone = type("B", (), {"feature_info": [type("F", (), {"stride": 8})()]})()
    image = tmp_path / "im.png"
    pixels = np.zeros((9, 11, 3), dtype=np.uint8)
    pixels[:3, :, 0], pixels[3:6, :, 1], pixels[6:, :, 2] = 255, 255, 255
    Image.fromarray(pixels).save(image)
    task.predict(model, [image], tmp_path / "eager", torch.device("cpu"))
    eager = Image.open(tmp_path / "eager" / "im_mask.png")
    labels = np.asarray(eager).astype(np.int64)
    assert labels[:3].max() == 0 and (labels[3:6] == 1).all() and (labels[6:] == 2).all()
    onnx_model = type("M", (), {"class_names": task.class_names})()
    infer_onnx.segment_result(onnx_model, image, {"labels": labels}, tmp_path / "onnx")
    onnx = Image.open(tmp_path / "onnx" / "im_mask.png")
    assert eager.mode == onnx.mode == "P" and eager.getpalette() == onnx.getpalette()
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(onnx))
    overlays = [np.asarray(Image.open(tmp_path / d / "im_overlay.png")) for d in ("eager", "onnx")]
    np.testing.assert_array_equal(*overlays)
