"""Classification task: metrics with known answers, the head's loss, data errors, and a
seconds-long synthetic training run through the shared engine."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from heads.classification import ClassifierHead
from tasks import TASKS
from tasks.classify.metrics import confusion_matrix, topk_correct
from tasks.config import ConfigError, load_config
from tasks.engine import Trainer

NO_CACHE = "data.cache_dir=''"  # keep tests out of ~/.cache


def make_cfg(*overrides: str):
    return load_config(TASKS.get("classify").config_class, None, list(overrides))


def test_topk_on_hand_built_logits():
    logits = torch.tensor(
        [
            [0.9, 0.05, 0.03, 0.01, 0.005, 0.004, 0.001],  # true 0: top-1 hit
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # true 2: rank 5 -> top-5 hit only
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # true 1: rank 6 -> miss
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # true 2: top-1 hit
        ]
    )
    targets = torch.tensor([0, 2, 1, 2])
    assert topk_correct(logits, targets, (1, 5)) == {1: 2, 5: 3}
    # fewer than 5 classes: top-5 means top-K, always right
    three = torch.tensor([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    assert topk_correct(three, torch.tensor([0, 1]), (1, 5)) == {1: 0, 5: 2}


def test_confusion_matrix_counts():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_head_loss_is_label_smoothed_cross_entropy():
    head = ClassifierHead(8, 4, feature="c4", label_smoothing=0.1)
    feats = {"c4": torch.randn(3, 8, 2, 2)}
    y = torch.tensor([0, 3, 1])
    out = head(feats, y)
    expected = F.cross_entropy(head.fc(feats["c4"].mean((2, 3))), y, label_smoothing=0.1)
    torch.testing.assert_close(out.losses["cls"], expected)
    assert out.preds.shape == (3, 4) and head(feats).losses == {}


def _tree(root, classes, n=2):
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (60 * ci, 10 * i, 0)).save(root / name / f"{i}.png")
    return root


def test_val_class_missing_from_train_is_an_error(tmp_path):
    train = _tree(tmp_path / "train", ["cat", "dog"])
    val = _tree(tmp_path / "val", ["cat", "eel"])
    task = TASKS.create(
        "classify", cfg=make_cfg(f"data.train={train}", f"data.val={val}", NO_CACHE)
    )
    with pytest.raises(ValueError, match=r"eel.*data.train"):
        task.build_datasets()


def test_explicit_val_folder_maps_to_train_class_ids(tmp_path):
    train = _tree(tmp_path / "train", ["ant", "bee", "cat"])
    val = _tree(tmp_path / "val", ["bee", "cat"], n=1)
    cfg = make_cfg(f"data.train={train}", f"data.val={val}", "data.image_size=8", NO_CACHE)
    task = TASKS.create("classify", cfg=cfg)
    tr, va = task.build_datasets()
    assert task.class_names == ["ant", "bee", "cat"]
    assert len(tr) == 6 and va.labels.tolist() == [1, 2]


def test_holdout_split_from_train_folder(tmp_path):
    train = _tree(tmp_path / "train", ["a", "b"], n=10)
    cfg = make_cfg(f"data.train={train}", "data.val_fraction=0.2", NO_CACHE)
    tr, va = TASKS.create("classify", cfg=cfg).build_datasets()
    assert len(tr) == 16 and va.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.slow  # ~10 s alone, ~25 s on a contended 2-core box
def test_a_timm_backbone_classifies():
    """model.backbone=timm:<name> failed with "takes no argument 'zero_init_residual'"."""
    cfg = load_config(TASKS.get("classify").config_class, None, ["model.backbone=timm:resnet18"])
    task = TASKS.create("classify", cfg=cfg)
    task.class_names = ["a", "b", "c"]
    model = task.build_model().eval()
    assert model(torch.zeros(2, 3, 32, 32) + 128).preds.shape == (2, 3)


def test_synthetic_training_through_engine_beats_chance(tmp_path):
    torch.set_num_threads(1)  # small convs: one thread is faster than two that contend
    cfg = make_cfg(
        "data.image_size=16",
        "data.synthetic_train_per_class=64",
        "data.synthetic_val_per_class=20",
        "data.tta_flip=true",
        "train.epochs=6",
        "train.batch_size=32",
        "train.lr=0.05",
        "train.checkpoint_minutes=0",
    )
    task = TASKS.create("classify", cfg=cfg)
    metrics = Trainer(task, tmp_path / "run", quiet=True).train()
    assert metrics["top1"] > 0.6, metrics  # chance is 0.1
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()

    img = tmp_path / "img.png"
    Image.fromarray(task._synthetic()[1].images[0].permute(1, 2, 0).numpy()).save(img)
    model = Trainer(task, tmp_path / "run2", quiet=True).model  # any model: checks plumbing
    out = task.predict(model, [img], tmp_path / "pred", torch.device("cpu"))
    saved = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert saved == out and len(out[0]["top"]) == 5
    assert abs(sum(t["prob"] for t in out[0]["top"]) - 1) < 0.5


def test_progressive_resizing_follows_the_run_progress(tmp_path):
    """data.progressive: training batches are 8 px for the first half of the steps (the engine
    sets task.progress before each step), then 16 px; evaluation stays at image_size."""
    torch.set_num_threads(1)
    cfg = make_cfg(
        "data.image_size=16", "data.synthetic_train_per_class=16",
        "data.synthetic_val_per_class=4", "data.progressive=[[0, 8], [0.5, 16]]",
        "train.epochs=4", "train.batch_size=32", "train.checkpoint_minutes=0",
    )  # fmt: skip
    task = TASKS.create("classify", cfg=cfg)
    trainer = Trainer(task, tmp_path / "run", quiet=True)
    sizes: list[tuple[bool, int]] = []
    trainer.model.register_forward_pre_hook(
        lambda module, args: sizes.append((module.training, args[0].shape[-1]))
    )
    trainer.train()
    train_sizes = [size for training, size in sizes if training]
    assert len(train_sizes) == 20  # 160 images / 32 per step x 4 epochs
    assert train_sizes == [8] * 9 + [16] * 11  # step k runs at progress k / 20
    assert {size for training, size in sizes if not training} == {16}


@pytest.mark.parametrize(
    "schedule", ["[[0.1, 8]]", "[[0, 8], [0, 16]]", "[[0, 8], [1.0, 16]]", "[[0, 33]]",
                 "[[0, 8.5]]", "[[0, 8, 16]]"],
)  # fmt: skip
def test_bad_progressive_schedule_is_a_config_error(schedule):
    with pytest.raises(ConfigError, match="data.progressive=.*expected \\[\\[fraction, size\\]"):
        TASKS.create("classify", cfg=make_cfg(f"data.progressive={schedule}"))


def test_translate_tta_averages_the_shifted_and_mirrored_views():
    """tta_logits(flip, translate=1) against views built by hand with index lists: the
    reflect-padded crops are the image shifted one pixel down-right / up-left, reflected at
    the border."""
    from tasks.classify.model import tta_logits

    class Probe(torch.nn.Module):  # logits = a linear read-out of every pixel
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.randn(4, 3 * 6 * 6, generator=torch.Generator().manual_seed(0))

        def forward(self, x):
            return type("Out", (), {"preds": x.flatten(1) @ self.w.T})()

    model, x = Probe(), torch.rand(2, 3, 6, 6) * 255
    down_right = x[:, :, [1, 0, 1, 2, 3, 4]][:, :, :, [1, 0, 1, 2, 3, 4]]  # padded[0:6]
    up_left = x[:, :, [1, 2, 3, 4, 5, 4]][:, :, :, [1, 2, 3, 4, 5, 4]]  # padded[2:8]

    def mirrored(v):
        return (model(v).preds + model(v.flip(3)).preds) / 2

    expected = 0.5 * mirrored(x) + 0.25 * (mirrored(down_right) + mirrored(up_left))
    assert torch.allclose(tta_logits(model, x, flip=True, translate=1), expected, atol=1e-3)
    assert torch.equal(tta_logits(model, x), model(x).preds)


@pytest.mark.parametrize("pixels", [-1, 16])
def test_bad_tta_translate_is_a_config_error(pixels):
    with pytest.raises(ConfigError, match=f"data.tta_translate={pixels}.*expected pixels"):
        TASKS.create("classify", cfg=make_cfg("data.image_size=32", f"data.tta_translate={pixels}"))
