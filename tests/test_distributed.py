"""DDP: the resumable sampler's sharding, and a real two-process torchrun run on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from tasks.data import ResumableSampler, TensorBatchLoader
from tasks.distributed import DistInfo, borrow_local_threads

ROOT = Path(__file__).resolve().parents[1]


def info(rank: int, world: int) -> DistInfo:
    return DistInfo(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


def test_sampler_shards_are_disjoint_and_resumable() -> None:
    data = TensorDataset(torch.arange(21))
    shards = []
    for rank in range(2):
        sampler = ResumableSampler(data, info(rank, 2), seed=3)
        sampler.set_epoch(5)
        shards.append(list(sampler))
        sampler.set_epoch(5, skip=4)
        assert list(sampler) == shards[-1][4:] and len(sampler) == 6
    assert len(shards[0]) == len(shards[1]) == 10  # drop_last: 21 -> 2 x 10
    assert not set(shards[0]) & set(shards[1])
    other = ResumableSampler(data, info(0, 2), seed=3)
    other.set_epoch(6)
    assert list(other) != shards[0]  # a new permutation every epoch


def test_tensor_batch_loader_matches_default_collate() -> None:
    data = TensorDataset(torch.randn(10, 3), torch.arange(10))
    sampler = ResumableSampler(data, info(0, 1), seed=0)
    sampler.set_epoch(0)
    order = list(sampler)
    batches = list(TensorBatchLoader(data, sampler, batch_size=4))
    assert len(batches) == 2  # full batches only
    expected = torch.utils.data.default_collate([data[i] for i in order[:4]])
    assert all(torch.equal(a, b) for a, b in zip(batches[0], expected, strict=True))


def test_rank0_borrows_the_sleeping_ranks_threads_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two one-thread ranks on a machine: rank 0 evaluates with two threads, then gives one
    back; a single process (or a single local rank) keeps its own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        with borrow_local_threads(info(0, 2)):
            assert torch.get_num_threads() == min(2, os.cpu_count() or 1)
        assert torch.get_num_threads() == 1
        with borrow_local_threads(info(0, 1)):  # no process group: nothing to borrow
            assert torch.get_num_threads() == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        with borrow_local_threads(info(0, 2)):  # the peer runs on another machine
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_torchrun_two_processes_keep_weights_equal(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node=2", str(ROOT / "tools" / "train.py"),
        "--task", "_toy", "--out", str(run_dir), "--quiet",
        "train.epochs=4", "train.log_every=2", "train.ema=0.9",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["weights_equal_across_ranks"] is True
    assert summary["ddp_backend"] == "gloo"
    assert summary["step"] == 16  # 256 images / 2 ranks / batch 32 = 4 steps per epoch
    assert summary["accuracy"] > 0.5
    assert not list(tmp_path.glob("runs*"))  # only rank 0's folder, where asked


@pytest.mark.slow
def test_torchrun_one_process_still_trains_through_ddp(tmp_path: Path) -> None:
    """``--nproc_per_node=1`` (a one-GPU machine) joins the process group: the DDP path runs."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node=1", str(ROOT / "tools" / "train.py"),
        "--task", "_toy", "--out", str(tmp_path / "run"), "--quiet", "train.epochs=1",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["world_size"] == 1 and summary["ddp_backend"] == "gloo"
