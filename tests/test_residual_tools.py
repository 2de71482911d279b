"""The residual lab's commands and engine hook, end to end on small generated data."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import checkpoint as ckpt
from tasks.classify.config import ClassifyConfig
from tasks.classify.task import ClassifyTask
from tasks.config import config_to_yaml, load_config
from tasks.engine import Trainer
from tasks.logging_utils import read_rows
from tasks.residual.degradation import RunCurves, verdict
from tasks.residual.diagnostics import ROW_KIND

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import residual_lab  # noqa: E402

TINY_DATA = [
    "data.synthetic_classes=4",
    "data.synthetic_train_per_class=8",
    "data.synthetic_val_per_class=2",
    "train.batch_size=8",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification run folder with untrained resnet20 weights (no training needed)."""
    cfg = load_config(ClassifyConfig, None, [*TINY_DATA, "model.backbone=resnet20"])
    task = ClassifyTask(cfg)
    task.build_datasets()
    torch.manual_seed(0)
    model = task.build_model()
    out = tmp_path_factory.mktemp("run")
    meta = ckpt.weights_metadata("classify", config_to_yaml(cfg), task.class_names)
    ckpt.save_weights(out / ckpt.BEST_WEIGHTS, model.state_dict(), meta)
    return out


def test_diagnostics_hook_logs_stage_statistics(tmp_path: Path) -> None:
    cfg = load_config(
        ClassifyConfig, None, [*TINY_DATA, "model.backbone=resnet20", "train.max_steps=4",
                               "model.zero_init_residual=false", "train.log_every=2",
                               "train.diagnostics_every=2"],  # the user's switch for the hook
    )  # fmt: skip
    Trainer(ClassifyTask(cfg), tmp_path, quiet=True).train()
    rows = [r for r in read_rows(tmp_path) if r["kind"] == ROW_KIND]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        for stage in ("layer1", "layer2", "layer3"):
            assert r[f"grad/{stage}"] > 0
            assert 0 < r[f"branch_ratio/{stage}"] < 100
            assert 0 <= r[f"dead_relu/{stage}"] <= 1
        assert r["grad/head"] > 0 and r["grad/stem"] > 0
        assert 0 <= r["train_error"] <= 1 and r["train_images"] == 16  # 2 steps x 8 images
    assert (tmp_path / "tb").is_dir()


def _curves(family: str, depth: int, train_error: float, images: int = 50_000) -> RunCurves:
    return RunCurves(f"{family}{depth}", family, depth, "-", final_train_error=train_error,
                     final_train_images=images)  # fmt: skip


def test_verdict_reads_the_numbers() -> None:
    shown = verdict(
        [
            _curves("plain", 20, 0.10),
            _curves("plain", 56, 0.18),
            _curves("residual", 20, 0.10),
            _curves("residual", 56, 0.06),
        ],
        10,
    )
    assert shown["shown"] and shown["plain"]["finding"] == "as expected"
    noisy = verdict(
        [
            _curves("plain", 20, 0.50, 100),
            _curves("plain", 56, 0.52, 100),
            _curves("residual", 20, 0.50, 100),
            _curves("residual", 56, 0.40, 100),
        ],
        10,
    )
    assert not noisy["shown"] and noisy["plain"]["finding"] == "within noise"
    stuck = verdict(
        [
            _curves("plain", 20, 0.89),
            _curves("plain", 56, 0.90),
            _curves("residual", 20, 0.60),
            _curves("residual", 56, math.nan),
        ],
        10,
    )
    assert not stuck["shown"]
    assert stuck["stuck"] == ["plain20", "plain56", "residual56"]
    assert "did not leave the initial plateau" in stuck["text"][-1]


def test_gradients_command_on_a_backbone_and_a_run(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    argv = ["gradients", "resnet20", str(run_dir), "--out", str(out), "--batch", "2"]
    assert residual_lab.main(argv) == 0
    report = json.loads((out / "gradients.json").read_text())
    recipe = f"init, {run_dir.name} recipe"
    assert set(report["models"]) == {
        "resnet20 (init)", "resnet20_plain (init)", f"resnet20 (trained, {run_dir.name})",
        f"resnet20 ({recipe})", f"resnet20_plain ({recipe})",
    }  # fmt: skip
    for model in report["models"].values():
        assert len(model["blocks"]) == 9
    assert (out / "gradients.png").stat().st_size > 10_000


def test_gradients_of_a_run_do_not_depend_on_the_global_rng(run_dir: Path, tmp_path: Path) -> None:
    """The same --seed gives the same numbers: the run's training step augments the probe
    batch (pad-crop-flip) from the global RNGs, whose state differs from process to process."""
    reports = []
    for seed in (1, 2):
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = tmp_path / str(seed)
        assert (
            residual_lab.main(["gradients", str(run_dir), "--out", str(out), "--batch", "2"]) == 0
        )
        reports.append(json.loads((out / "gradients.json").read_text())["models"])
    assert reports[0] == reports[1]


def test_gradients_command_rejects_unknown_names(tmp_path: Path, capsys) -> None:
    assert residual_lab.main(["gradients", "resnet57", "--out", str(tmp_path)]) == 2
    assert "neither a run folder nor a registered backbone" in capsys.readouterr().err


def test_cam_command_writes_overlays(run_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((32, 50)):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    out = tmp_path / "cam"
    assert residual_lab.main(["cam", str(run_dir), *paths, "--out", str(out)]) == 0
    results = json.loads((out / "gradcam.json").read_text())
    assert [Path(r["overlay"]).name for r in results] == ["img0_gradcam.png", "img1_gradcam.png"]
    assert all(Path(r["overlay"]).stat().st_size > 1000 for r in results)


@pytest.mark.slow
def test_degradation_command_writes_figure_json_and_verdict(tmp_path: Path, capsys) -> None:
    argv = ["degradation", *TINY_DATA, "--budget-minutes", "0.1", "--log-every", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert residual_lab.main(argv) == 0
    report = json.loads((tmp_path / "degradation.json").read_text())
    assert [r["backbone"] for r in report["runs"]] == [
        "resnet20_plain", "resnet56_plain", "resnet20", "resnet56",
    ]  # fmt: skip
    assert all(r["steps"] >= 1 and r["val_error"] for r in report["runs"])
    assert report["verdict"]["shown"] is False  # 1.5 s per net cannot show degradation
    assert "VERDICT: not shown" in capsys.readouterr().out
    assert (tmp_path / "degradation.png").stat().st_size > 10_000
