"""Checkpoint files: atomic writes, self-describing weights, resumable state, bit-exact resume."""

from __future__ import annotations

import json
import os
import random
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tasks import checkpoint as ckpt
from tasks.config import load_config
from tasks.engine import Trainer
from tasks.toy import ToyConfig, ToyTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.safetensors"
    ckpt.save_weights(target, {"w": torch.ones(3)}, {"task": "t"})
    before = target.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_weights(target, {"w": torch.zeros(1000)}, {"task": "t"})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file


def test_weights_round_trip_with_metadata(tmp_path: Path) -> None:
    conv = torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last)
    meta = ckpt.weights_metadata("_toy", "train:\n  lr: 0.1\n", ["cat", "dog"])
    ckpt.save_weights(tmp_path / "w.safetensors", {"conv": conv, "n": torch.tensor(3)}, meta)
    state, read_meta = ckpt.read_weights(tmp_path / "w.safetensors")
    assert torch.equal(state["conv"], conv) and int(state["n"]) == 3
    assert read_meta["task"] == "_toy" and json.loads(read_meta["class_names"]) == ["cat", "dog"]
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        ckpt.find_weights(tmp_path)


def test_rng_state_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    ckpt.save_state(tmp_path / "s.pt", {"rng": ckpt.rng_state()})
    expected = (torch.rand(2), np.random.rand(2), random.random())
    ckpt.set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


RESUME_CFG = (
    "train.epochs=100", "train.max_steps=14", "train.deterministic=true", "train.grad_accum=2",
    "train.ema=0.9", "train.log_every=3", "train.eval_every=1", "model.width=4",
)  # fmt: skip  # 4 optimizer steps per epoch, so step 6 is mid-epoch 2


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    Trainer(ToyTask(load_config(ToyConfig, overrides=RESUME_CFG)), straight, quiet=True).train()

    resumed = tmp_path / "resumed"
    interrupted = load_config(ToyConfig, overrides=[*RESUME_CFG, "train.stop_after_steps=6"])
    assert Trainer(ToyTask(interrupted), resumed, quiet=True).train() is None
    state = torch.load(resumed / "last.pt", weights_only=True)  # primitives + tensors only
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 4)
    train = runpy.run_path(str(ROOT / "tools" / "train.py"), run_name="tool")["main"]
    assert train(["--resume", str(resumed), "--quiet"]) == 0  # as the stop message says

    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    final = torch.load(resumed / "last.pt", weights_only=True)
    assert final["step"] == 14
    ema_a = torch.load(straight / "last.pt", weights_only=True)["ema"]
    assert all(torch.equal(ema_a[k], v) for k, v in final["ema"].items())

    rows = (resumed / "metrics.jsonl").read_text()
    assert train(["--resume", str(resumed), "--quiet"]) == 0  # finished: nothing to do
    assert (resumed / "metrics.jsonl").read_text() == rows  # no second final evaluation


def test_broken_checkpoint_files_are_named_errors(tmp_path: Path) -> None:
    """A truncated copy of a weights or resume file, or weights for other classes, is one
    error naming the file (the tools print it), not a safetensors/torch traceback."""
    from tasks.images import DataError

    state = {"weight": torch.ones(3, 4)}
    ckpt.save_weights(tmp_path / "m.safetensors", state, {"task": "_toy"})
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.safetensors' is not readable"):
        ckpt.read_weights(tmp_path / "cut.safetensors")
    ckpt.save_state(tmp_path / "whole.pt", {"weight": torch.ones(3, 4)})  # a resume state
    with pytest.raises(DataError, match=r"whole\.pt' is a PyTorch pickle .*pass the run folder"):
        ckpt.read_weights(tmp_path / "whole.pt")  # or a .pth: not "a truncated copy?"
    ckpt.save_state(tmp_path / "last.pt", {"step": 3, "t": torch.zeros(1000)})
    for damaged in (b"", b"<html>not found</html>", (tmp_path / "last.pt").read_bytes()[:200]):
        (tmp_path / "last.pt").write_bytes(damaged)
        with pytest.raises(DataError, match=r"last\.pt' is not readable"):
            ckpt.load_state(tmp_path / "last.pt")
    model = torch.nn.Linear(4, 2, bias=False)  # 2 classes now, 3 when saved
    with pytest.raises(DataError, match=r"m\.safetensors' do not fit.*size mismatch.*classes"):
        ckpt.load_into(model, state, tmp_path / "m.safetensors")


def test_run_folders_are_never_overwritten_or_resumed_from_a_mismatched_pair(
    tmp_path: Path, capsys
) -> None:
    """--out on a finished run is refused (it replaced the weights and appended to the
    metrics); overrides given with --resume are saved in config.yaml, so the printed resume
    command continues what was asked; last.safetensors and last.pt of different saves (a
    copied file, a kill between the two renames) are refused, not resumed wrongly; so is a
    --resume folder that holds no run."""
    train = runpy.run_path(str(ROOT / "tools" / "train.py"), run_name="tool")["main"]
    run = tmp_path / "run"
    base = ["--task", "_toy", "--quiet", "train.epochs=2", "train.log_every=1"]
    assert train([*base, "--out", str(run), "train.stop_after_steps=2"]) == 0
    assert train([*base, "--out", str(run)]) == 2
    assert "already holds a run (config.yaml, last.pt)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert train([*base, "--out", str(tmp_path / "file")]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert train(["--resume", str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    assert train(["--resume", str(tmp_path), "--quiet"]) == 2  # a folder, but no run in it
    assert "no last.safetensors there, so not a resumable run folder" in capsys.readouterr().err
    stopped = tmp_path / "stopped"  # a run that failed before its first checkpoint
    stopped.mkdir()
    (stopped / "config.yaml").write_text((run / "config.yaml").read_text())
    assert train(["--resume", str(stopped), "--quiet"]) == 2
    assert "this one stopped before it: start it again with --out" in capsys.readouterr().err
    assert train([*base, "--out", str(stopped)]) == 2
    assert "stopped before its first checkpoint (only config.yaml)" in capsys.readouterr().err

    step2 = (run / "last.pt").read_bytes()
    assert train(["--resume", str(run), "--quiet", "train.stop_after_steps=5"]) == 0
    assert "stop_after_steps: 5" in (run / "config.yaml").read_text()
    (run / "last.pt").write_bytes(step2)  # the state of an earlier save beside newer weights
    assert train(["--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors holds step 5 but last.pt step 2" in err

    ckpt.save_weights(run / "last.safetensors", {"w": torch.zeros(1)}, {})
    assert train(["--resume", str(run), "--quiet"]) == 2
    assert "has no 'task' metadata" in capsys.readouterr().err


def test_resume_refuses_overrides_the_saved_state_cannot_follow(tmp_path: Path, capsys) -> None:
    """A changed optimizer failed with KeyError inside torch; mid-epoch, a changed batch size
    or seed replayed images, and a grad_accum not dividing the position looped forever."""
    train = runpy.run_path(str(ROOT / "tools" / "train.py"), run_name="tool")["main"]
    run = tmp_path / "run"
    assert train(["--task", "_toy", "--quiet", "--out", str(run), "train.stop_after_steps=3"]) == 0
    for override, before in [("train.optimizer=adamw", "'sgd'"), ("train.batch_size=16", "32"),
                             ("train.grad_accum=2", "1"), ("train.seed=5", "0")]:  # fmt: skip
        assert train(["--resume", str(run), "--quiet", override]) == 2
        key = override.split("=")[0]
        assert f"{key} was {before} in the interrupted run" in capsys.readouterr().err
    assert train(["--resume", str(run), "--quiet", "train.lr=0.01"]) == 0  # a new recipe is fine
