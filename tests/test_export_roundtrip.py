"""ONNX export of every task through tools/export_onnx.py: parity with PyTorch at three
shapes (two sizes, batch 1/2/3), metadata read back, clear failures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tasks import TASKS, load_model
from tasks.checkpoint import save_weights, weights_metadata
from tasks.config import config_to_yaml, load_config
from tasks.export import parity
from tasks.export.metadata import read_metadata
from tasks.inference import OnnxModel

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "classify": ["model.backbone=resnet18", "data.image_size=64", "data.cache_dir=''",
                 "data.synthetic_train_per_class=2", "data.synthetic_val_per_class=1"],
    "segment": ["model.backbone=resnet18", "data.synthetic_size=64", "data.synthetic_train=2",
                "data.synthetic_val=6"],
    "detect": ["model.min_size=96", "model.max_size=160", "model.score_thresh=0.0",
               "data.shapes_train=2", "data.shapes_val=6"],
}  # fmt: skip


def load_tool(name: str):  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_checkpoint(tmp_path: Path, task_name: str, *extra: str) -> Path:
    cfg = load_config(TASKS.get(task_name).config_class, None, [*TINY[task_name], *extra])
    task = TASKS.create(task_name, cfg=cfg)
    task.build_val_dataset()
    model = task.build_model()
    path = tmp_path / f"{task_name}.safetensors"
    save_weights(
        path, model.state_dict(), weights_metadata(task_name, config_to_yaml(cfg), task.class_names)
    )
    return path


@pytest.mark.parametrize("task_name", ["classify", "segment", "detect"])
def test_dynamic_export_matches_pytorch(tmp_path, capsys, task_name):
    ckpt = make_checkpoint(tmp_path, task_name)
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    log = capsys.readouterr().out
    assert log.count(" ok") == 3 and "largest difference" in log  # 3 shapes, batches 1, 2, 3
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    meta = read_metadata(model)
    assert meta["task"] == task_name and meta["input"]["shape"] == [None, 3, None, None]
    assert isinstance(meta["class_names"], list) and meta["class_names"]
    assert meta["feature_info"][-1][0] == "c5" and meta["resvision_version"]
    if task_name == "detect":
        assert any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
        res = OnnxModel(out, provider="cpu")(np.zeros((70, 90, 3), np.uint8))[0]
        assert res["boxes"].shape[1] == 4 and len(res["scores"]) == len(res["labels"])


@pytest.mark.parametrize("head", ["deeplabv3", "pspnet"])
def test_every_segmentation_head_exports_with_dynamic_sizes(tmp_path, capsys, head):
    """The default head (deeplabv3plus) is exported above; PSPNet's pyramid pooling used to stop
    the exporter ('adaptive_avg_pool2d, input size not accessible')."""
    ckpt = make_checkpoint(tmp_path, "segment", f"model.head={head}")
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    assert capsys.readouterr().out.count(" ok") == 3


def test_segment_export_runs_at_the_training_scale(tmp_path, capsys):
    """data.max_size=48: the graph shrinks 64-pixel images to 48, runs at 48 and 60 px
    (multi-scale TTA) and answers at 64; parity with eager is checked at three sizes."""
    ckpt = make_checkpoint(
        tmp_path, "segment", "data.max_size=48", "model.channels=64", "data.eval_scales=[1,1.25]"
    )
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    assert capsys.readouterr().out.count(" ok") == 3
    preprocess = read_metadata(onnx.load(str(out)))["preprocess"]
    assert preprocess["resize"] == "longest_side" and preprocess["scales"] == [1.0, 1.25]
    labels = OnnxModel(out, provider="cpu")(np.zeros((70, 90, 3), np.uint8))[0]["labels"]
    assert labels.shape == (70, 90)
    old = tmp_path / "opset11.onnx"  # the oldest opset offered: no float64 Clip in ORT there
    export = [str(ckpt), "--output", str(old), "--dynamic", "--opset", "11"]
    assert load_tool("export_onnx").main(export) == 0
    assert capsys.readouterr().out.count(" ok") == 3


def test_classify_graph_has_the_evaluation_tta(tmp_path, capsys):
    """With flip + translate TTA the ONNX logits equal the task's own evaluation logits."""
    ckpt = make_checkpoint(tmp_path, "classify", "data.tta_flip=true", "data.tta_translate=2")
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    model, task = load_model(ckpt)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    expected = task.predict_logits(model, images)
    assert not torch.allclose(expected, model(images).preds, atol=1e-3)  # the views matter
    logits = OnnxModel(out, provider="cpu").session.run(None, {"images": images.numpy()})[0]
    assert np.abs(logits - expected.numpy()).max() < 1e-3


def test_segment_infer_onnx_draws_what_predict_draws(tmp_path, capsys):
    """tools/infer_onnx.py and tools/predict.py write the same palette mask and overlay."""
    from PIL import Image

    ckpt = make_checkpoint(tmp_path, "segment")
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    image = tmp_path / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    eager, onnx_dir = tmp_path / "eager", tmp_path / "onnx"
    assert load_tool("predict").main([str(ckpt), str(image), "--out", str(eager)]) == 0
    assert load_tool("infer_onnx").main([str(out), str(image), "--out", str(onnx_dir)]) == 0
    for name in ("street_mask.png", "street_overlay.png"):
        a, b = Image.open(eager / name), Image.open(onnx_dir / name)
        assert a.mode == b.mode and a.size == b.size == (70, 50)
        assert (np.asarray(a) == np.asarray(b)).mean() > 0.99
    assert Image.open(eager / "street_mask.png").mode == "P"
    static = tmp_path / "static.onnx"  # a fixed input size: another image's size is named
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(static)]) == 0
    capsys.readouterr()
    assert load_tool("infer_onnx").main([str(static), str(image)]) == 2
    assert f"error: {image}: static.onnx was exported with a fixed input shape" in (
        capsys.readouterr().err
    )


def test_parity_failure_exits_nonzero_and_keeps_the_earlier_file(tmp_path, capsys, monkeypatch):
    ckpt = make_checkpoint(tmp_path, "classify")
    (tmp_path / "m.onnx").write_bytes(b"an earlier, good export")
    monkeypatch.setattr(parity, "TOLERANCE", -1.0)  # nothing can pass
    code = load_tool("export_onnx").main([str(ckpt), "--output", str(tmp_path / "m.onnx")])
    assert code == 1 and "disagree" in capsys.readouterr().err
    assert (tmp_path / "m.onnx").read_bytes() == b"an earlier, good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classify.safetensors", "m.onnx"]
    code = load_tool("export_onnx").main([str(ckpt), "--output", str(tmp_path)])
    assert code == 2 and "is a folder; expected a file path" in capsys.readouterr().err


def test_checkpoint_without_task_metadata_is_a_clear_error(tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"
    save_weights(bare, {"w": torch.zeros(1)}, {})
    code = load_tool("export_onnx").main([str(bare), "--output", str(tmp_path / "m.onnx")])
    assert code == 2 and "'task'" in capsys.readouterr().err


@pytest.mark.parametrize("task_name", ["classify", "detect"])
def test_fp16_model_loads_and_agrees_with_fp32(tmp_path, capsys, task_name):
    """--fp16 is meant for the CUDA provider; on the CPU provider it must still load and give
    the fp32 answers within half precision (classification probabilities within 1e-2)."""
    ckpt = make_checkpoint(tmp_path, task_name)
    export = load_tool("export_onnx").main
    fp32, fp16 = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    assert export([str(ckpt), "--output", str(fp32), "--dynamic", "--skip-parity"]) == 0
    assert export([str(ckpt), "--output", str(fp16), "--dynamic", "--fp16"]) == 0
    half = onnx.load(str(fp16))
    assert read_metadata(half)["precision"] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    a, b = (OnnxModel(p, provider="cpu")(image)[0] for p in (fp32, fp16))
    assert a.keys() == b.keys()
    if task_name == "classify":
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-2)
    else:
        assert b["boxes"].dtype == np.float32 and b["boxes"].shape[1] == 4


def test_detection_graph_sizes_images_like_eager_at_awkward_sizes(tmp_path, capsys):
    """A 97 px short side scaled to min_size 96 is 95.99999 px in float32 arithmetic: the graph
    must size images in float64 as torchvision does, or every box of such an image moves."""
    ckpt = make_checkpoint(tmp_path, "detect")
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    model, _ = load_model(ckpt)
    onnx_model = OnnxModel(out, provider="cpu")
    for h, w in ((130, 97), (121, 200)):
        x = torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(h),
                          dtype=torch.uint8)  # fmt: skip
        row = parity.compare_detections(model, x, onnx_model.run_batch(x.numpy()))
        assert row.ok, f"{h}x{w}: {row.detail}"


def test_bad_export_and_eval_arguments_fail_before_any_work(tmp_path, capsys):
    """Found before exporting or evaluating, each as one line naming the argument."""
    ckpt = make_checkpoint(tmp_path, "classify")
    (tmp_path / "afile").write_text("x")
    export = load_tool("export_onnx").main
    assert export([str(ckpt), "--output", str(tmp_path / "m.onnx"), "--batch", "0"]) == 2
    assert "--batch 0: expected 1 or more" in capsys.readouterr().err
    assert export([str(ckpt), "--output", str(tmp_path / "afile" / "m.onnx")]) == 2
    assert "afile' is a file; expected a folder" in capsys.readouterr().err
    evaluate = load_tool("eval").main
    for out in (tmp_path, tmp_path / "missing" / "e.json"):
        assert evaluate([str(ckpt), "--out", str(out)]) == 2
        err = capsys.readouterr()
        assert "expected a file path in an existing folder" in err.err
        assert "evaluating" not in err.out


def test_detection_graph_keeps_a_side_that_scales_below_one_pixel(tmp_path, capsys):
    """A 4 x 1000 strip scales by 160 / 1000 to 0.64 x 160 pixels: the graph keeps one pixel
    instead of ONNX Runtime's 'Scale value should be greater than 0' from its Resize, and the
    eager model (tools/predict.py) does the same instead of failing in torchvision's resize."""
    ckpt = make_checkpoint(tmp_path, "detect")
    out = tmp_path / "model.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    onnx_model = OnnxModel(out, provider="cpu")
    eager, _ = load_model(ckpt)
    for h, w in ((4, 1000), (1000, 4)):
        x = torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(h),
                          dtype=torch.uint8)  # fmt: skip
        onnx_out = onnx_model.run_batch(x.numpy())
        assert onnx_out["num_detections"][0] > 0, "score_thresh 0 keeps detections"
        row = parity.compare_detections(eager, x, onnx_out)
        assert row.ok, f"{h}x{w}: {row.detail}"


def test_an_opset_onnx_runtime_cannot_run_is_named_as_such(tmp_path, capsys):
    """RoiAlign-22 exports, but this ONNX Runtime has no kernel for it: the error names the
    opset and ORT's reason, not a temporary file that "is not a loadable ONNX model"."""
    ckpt = make_checkpoint(tmp_path, "detect")
    out = tmp_path / "m.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--opset", "22"]) == 2
    err = capsys.readouterr().err
    assert "cannot run the graph exported at --opset 22" in err and "RoiAlign(22)" in err
    assert ".export-" not in err and not out.exists()


def test_bad_opset_output_folder_and_val_data_fail_before_the_export(tmp_path, capsys, monkeypatch):
    """Each is one error line (exit 2) naming the argument, before any exporting: an opset
    the exporter cannot write (7 dumped the whole graph and said 'NoneType' object is not
    subscriptable), a folder that cannot be written in (a PermissionError traceback after
    loading the model) and --val data of the wrong kind (found after export and int8)."""
    import tempfile

    from PIL import Image

    ckpt = make_checkpoint(tmp_path, "classify")
    export = load_tool("export_onnx").main
    for opset in ("7", "99"):
        assert export([str(ckpt), "--output", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and f"--opset {opset}: expected 11.." in err

    def unwritable(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "TemporaryDirectory", unwritable)
        assert export([str(ckpt), "--output", str(tmp_path / "m.onnx")]) == 2
    out, err = capsys.readouterr()
    assert "cannot write in" in err and "Permission denied" in err and "exported" not in out

    calib, val = tmp_path / "calib", tmp_path / "val"
    (val / "images").mkdir(parents=True)
    calib.mkdir()
    for folder in (calib, val / "images"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    code = export([str(ckpt), "--output", str(tmp_path / "m.onnx"), "--int8", str(calib),
                   "--val", str(val)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and "'images'" in err and "exported" not in out
    assert not (tmp_path / "m.onnx").exists()
