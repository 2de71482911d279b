"""A short synthetic-shapes training run: the loss falls, AP is above zero, pictures appear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from backbones.registry import OptionError
from tasks import TASKS
from tasks.config import load_config
from tasks.detect.config import DetectConfig
from tasks.engine import Trainer
from tasks.shapes import SHAPE_CLASSES, make_shapes_sample, semantic_mask


def test_shapes_samples_are_deterministic_and_consistent():
    a, b = make_shapes_sample(3, seed=1), make_shapes_sample(3, seed=1)
    assert np.array_equal(a.image, b.image) and a.image.dtype == np.uint8
    for s in (make_shapes_sample(i, seed=0, size=96) for i in range(20)):
        assert s.masks.shape[1:] == (96, 96) and len(s.boxes) == len(s.labels) == len(s.masks)
        assert ((s.labels >= 1) & (s.labels <= len(SHAPE_CLASSES))).all()
        for mask, (x1, y1, x2, y2) in zip(s.masks, s.boxes, strict=True):
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
        sem = semantic_mask(s)
        assert set(np.unique(sem)) <= {0, *s.labels.tolist()}


@pytest.mark.slow
def test_short_synthetic_training_learns(tmp_path):
    torch.manual_seed(0)
    cfg = OmegaConf.structured(DetectConfig)
    cfg.merge_with_dotlist(
        ["data.shapes_train=8", "data.shapes_val=8", "data.shapes_size=64", "model.min_size=64",
         "model.max_size=64", "model.fpn_channels=32", "model.out_indices=[3,4]",
         "model.anchor_sizes=[16,32,64]", "model.rpn_post_nms_top_n_train=50",
         "model.box_batch_size_per_image=32", "data.augment.hflip=0", "data.vis_images=2"]
    )  # fmt: skip
    task = TASKS.create("detect", cfg=cfg)
    train_set, val_set = task.build_datasets()
    val_set.seed = train_set.seed  # evaluate on the training images: this checks learning
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    batches = [task.collate([train_set[i] for i in range(j, j + 4)]) for j in (0, 4)]
    losses = []
    for step in range(20):
        model.train()
        loss = task.train_step(model, batches[step % 2], torch.device("cpu"))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    metrics = task.evaluate(
        model, DataLoader(val_set, batch_size=4, collate_fn=task.collate), "cpu"
    )
    assert 0 < metrics["AP50"] <= 1 and {"AP", "AP75", "AP/circle"} <= set(metrics)

    paths = task.visualize(model, val_set, tmp_path, torch.device("cpu"))
    assert {p.name for p in paths} == {"detections.png", "precision_recall.png"}
    image = tmp_path / "in.png"
    Image.fromarray(make_shapes_sample(0, seed=0, size=64).image).save(image)
    task.predict(model, [image], tmp_path / "pred", torch.device("cpu"), score_thresh=0.0)
    drawn = np.asarray(Image.open(tmp_path / "pred" / "in.png"))
    assert drawn.shape == (64, 64, 3) and not np.array_equal(drawn, np.asarray(Image.open(image)))
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]["detections"]
    before = sorted(tmp_path.rglob("*"))
    printed = task.predict(model, [image], None, torch.device("cpu"), score_thresh=0.0)
    assert printed[0]["detections"] and sorted(tmp_path.rglob("*")) == before  # no --out


def test_interrupted_and_resumed_training_ends_with_identical_weights(tmp_path):
    """``--resume`` promise for detection, as tests/test_checkpoint.py pins it for the toy
    task: stopped mid-epoch and resumed, a Faster R-CNN run (its RPN/RoI sampling and the
    box-safe crop and flip draw from the global RNGs, EMA on, an evaluation per epoch) ends
    with the weights, best weights and EMA of the uninterrupted run, bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ["data.shapes_train=8", "data.shapes_val=2", "data.shapes_size=48",
           "model.min_size=48", "model.max_size=48", "model.backbone=resnet18_w24",
           "model.fpn_channels=32", "model.out_indices=[3,4]", "model.anchor_sizes=[16,32,64]",
           "model.rpn_post_nms_top_n_train=32", "model.box_batch_size_per_image=16",
           "data.augment.crop=0.5", "data.vis_images=0", "train.batch_size=2",
           "train.max_steps=6", "train.deterministic=true", "train.ema=0.9"]  # fmt: skip

    def run(run_dir, *extra, resume=False):
        task = TASKS.create("detect", cfg=load_config(DetectConfig, overrides=[*cfg, *extra]))
        return Trainer(task, run_dir, quiet=True, resume=resume).train()

    try:
        run(tmp_path / "straight")  # 4 steps an epoch
        assert run(tmp_path / "resumed", "train.stop_after_steps=3") is None
        run(tmp_path / "resumed", resume=True)
    finally:
        torch.set_num_threads(threads)
    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], name
    ema = [torch.load(tmp_path / d / "last.pt", weights_only=True)["ema"]
           for d in ("straight", "resumed")]  # fmt: skip
    assert all(torch.equal(v, ema[1][k]) for k, v in ema[0].items())
    summary = [json.loads((tmp_path / d / "metrics.json").read_text())
               for d in ("straight", "resumed")]  # fmt: skip
    assert summary[1]["step"] == 6
    assert (summary[0]["AP"], summary[0]["best_AP"]) == (summary[1]["AP"], summary[1]["best_AP"])


def test_fcos_refuses_a_pyramid_too_narrow_for_one_image():
    """fpn_channels=32 gave FCOSHead GroupNorm(32, 32): a 128-pixel square image alone has a
    1x1 P7 level, one value per group, and torch raised inside evaluation and predict."""
    cfg = OmegaConf.structured(DetectConfig)
    cfg.merge_with_dotlist(["model.head=fcos", "model.fpn_channels=32", "data.shapes_train=2"])
    task = TASKS.create("detect", cfg=cfg)
    task.build_datasets()
    with pytest.raises(OptionError, match="fpn_channels divisible by 32 and at least 64"):
        task.build_model()
    cfg.model.fpn_channels = 64
    model = task.build_model().eval()
    assert "boxes" in task.detect(model, [torch.rand(3, 128, 128)])[0]  # P7 is 1x1
