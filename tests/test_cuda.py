"""The CUDA paths: engine AMP (bf16, fp16 with its grad scaler) and channels_last, a CUDA-trained
checkpoint loaded on the CPU, and ONNX Runtime's CUDA provider with IO binding (fp32 and fp16)
against its CPU provider for every task. They run only where a GPU is; CI has none, so
``bench/gpu_check.sh`` runs them on a GPU machine (figures in docs/benchmarks.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_export_roundtrip import load_tool, make_checkpoint

from tasks import load_model
from tasks.config import load_config
from tasks.engine import Trainer
from tasks.export.parity import compare_detections
from tasks.inference import CUDA, OnnxModel
from tasks.toy import ToyConfig, ToyTask

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_ort_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and CUDA in ort.get_available_providers()),
    reason="needs a CUDA GPU and onnxruntime-gpu",
)


@needs_gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_engine_trains_with_amp_on_cuda_and_loads_on_cpu(tmp_path: Path, amp: str) -> None:
    run_dir = tmp_path / amp
    overrides = ["train.epochs=4", "train.device=cuda", f"train.amp={amp}",
                 "train.channels_last=true"]  # fmt: skip
    trainer = Trainer(ToyTask(load_config(ToyConfig, overrides=overrides)), run_dir, quiet=True)
    assert trainer.amp == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    metrics = trainer.train()
    assert metrics["accuracy"] > 0.75  # 4 classes: chance is 0.25
    model, _ = load_model(run_dir)  # saved from CUDA, loaded where no GPU may be
    assert next(model.parameters()).device.type == "cpu"
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["step"] == 32


@needs_ort_gpu
@pytest.mark.parametrize("task_name", ["classify", "segment", "detect"])
def test_cuda_provider_matches_cpu_provider(tmp_path: Path, task_name: str) -> None:
    ckpt = make_checkpoint(tmp_path, task_name)
    fp32, fp16 = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    export = load_tool("export_onnx").main
    assert export([str(ckpt), "--output", str(fp32), "--dynamic"]) == 0
    assert export([str(ckpt), "--output", str(fp16), "--dynamic", "--fp16"]) == 0
    cpu, gpu = OnnxModel(fp32, provider="cpu"), OnnxModel(fp32, provider="cuda")
    half = OnnxModel(fp16, provider="cuda")
    assert gpu.provider == half.provider == CUDA and gpu._binding
    rng = np.random.default_rng(0)
    for batch, (h, w) in ((1, (64, 80)), (2, (96, 64))):
        x = rng.integers(0, 256, (batch, 3, h, w), dtype=np.uint8)
        want, got, got16 = cpu.run_batch(x), gpu.run_batch(x), half.run_batch(x)
        if task_name == "detect":
            model, _ = load_model(ckpt)
            detail = compare_detections(model, torch.from_numpy(x), got).detail
            matched, total = map(int, re.match(r"(\d+)/(\d+)", detail).groups())
            # random weights and score_thresh 0: 100 near-tied boxes per image, and CUDA's
            # arithmetic differs from the CPU's in the last bits, so a few swap places
            assert matched >= 0.95 * total, detail
            assert got16["num_detections"].shape == (batch,)
            continue
        key = "probs" if task_name == "classify" else "logits"
        np.testing.assert_allclose(got[key], want[key], atol=1e-3)
        assert np.abs(got16[key] - want[key]).max() < 5e-2  # float16 activations
