"""ONNX export of an FCOS detector: ORT against eager ``Detector`` at two image sizes and
batches 1/2/3, standard operators only, metadata and inference API read back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import torch
from test_export_roundtrip import load_tool, make_checkpoint

from tasks import load_model
from tasks.checkpoint import read_weights, save_weights
from tasks.export.fcos import FCOSExport
from tasks.export.metadata import build_metadata, read_metadata
from tasks.export.onnx_export import export_onnx
from tasks.export.parity import check_parity, parity_batches, parity_sizes
from tasks.export.spec import build_export
from tasks.inference import OnnxModel


def fcos_checkpoint(tmp_path: Path) -> Path:
    """A tiny FCOS checkpoint whose prediction layers give spread scores and boxes a few
    pixels wide: FCOS's own init predicts near-equal scores and zero-size boxes (relu of a
    zero bias), whose ties and IoUs no parity check can resolve."""
    path = make_checkpoint(tmp_path, "detect", "model.head=fcos")
    state, meta = read_weights(path)
    gen = torch.Generator().manual_seed(0)
    for layer in ("classification_head.cls_logits", "regression_head.bbox_reg",
                  "regression_head.bbox_ctrness"):  # fmt: skip
        weight = state[f"head.head.{layer}.weight"]
        state[f"head.head.{layer}.weight"] = torch.randn(weight.shape, generator=gen) * 0.05
    state["head.head.regression_head.bbox_reg.bias"].fill_(1.0)  # sides ~1 stride from the point
    save_weights(path, state, meta)
    return path


def test_fcos_dynamic_export_matches_pytorch(tmp_path, capsys):
    ckpt = fcos_checkpoint(tmp_path)
    out = tmp_path / "fcos.onnx"
    assert load_tool("export_onnx").main([str(ckpt), "--output", str(out), "--dynamic"]) == 0
    log = capsys.readouterr().out
    assert log.count(" ok") == 3, log  # two sizes, batches 1, 2, 3
    matched = [int(n) for n in re.findall(r"(\d+)/\d+ detections matched", log)]
    assert len(matched) == 3 and min(matched) > 0, log  # score_thresh=0: detections survive
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
    meta = read_metadata(model)
    assert meta["task"] == "detect" and meta["input"]["shape"] == [None, 3, None, None]
    assert meta["outputs"] == ["boxes", "scores", "labels", "num_detections"]
    assert meta["preprocess"]["resize"] == "short_side" and meta["class_names"]
    onnx_model = OnnxModel(out, provider="cpu")
    res = onnx_model([np.zeros((70, 90, 3), np.uint8), np.full((70, 90, 3), 200, np.uint8)])
    for r in res:
        assert r["boxes"].shape == (len(r["scores"]), 4) and len(r["labels"]) == len(r["scores"])
        assert r["labels"].dtype == np.int64 and len(r["scores"]) <= 100
        assert (r["boxes"][:, 2:] <= [90, 70]).all() and (r["boxes"] >= 0).all()


def test_fcos_topk_and_score_threshold_match_eager(tmp_path):
    """Few candidates per level and a threshold inside the score range: the export's top-k of
    all pairs then NMS threshold must keep what torchvision's thresholded top-k keeps."""
    model, task = load_model(fcos_checkpoint(tmp_path))
    spec = build_export(model, task)
    assert isinstance(spec.module, FCOSExport)
    batch = parity_batches(task, [(1, 96, 96)])[0]
    with torch.no_grad():
        scores = model([img.float() / 255 for img in batch]).preds[0]["scores"]
    for head in (model.head, spec.module):
        head.topk_candidates, head.score_thresh = 7, float(scores.median())
    path = tmp_path / "fcos_topk.onnx"
    meta = build_metadata(task, model, spec, input_dtype="uint8", input_shape=[None, 3, None, None])
    export_onnx(spec, path, metadata=meta, dynamic=True)
    batches = parity_batches(task, parity_sizes(spec, dynamic=True, batch=1))
    rows = check_parity(task, model, spec, OnnxModel(path, provider="cpu"), batches)
    assert all(r.ok for r in rows), [r.detail for r in rows]
    assert all(not r.detail.startswith("0/") for r in rows), [r.detail for r in rows]
