"""The shared engine on the ``_toy`` task: learning, run-folder files, hooks, errors, tools."""

from __future__ import annotations

import json
import platform
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import load_model
from tasks.config import ConfigError, load_config
from tasks.engine import Trainer, TrainingError, keep_freed_memory
from tasks.hooks import Hook
from tasks.optim import build_ema
from tasks.schedule import lr_at, progress
from tasks.toy import ToyConfig, ToyTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(threads)


def toy_trainer(run_dir: Path, *overrides: str, **kwargs) -> Trainer:
    return Trainer(
        ToyTask(load_config(ToyConfig, overrides=overrides)), run_dir, quiet=True, **kwargs
    )


class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_train(self) -> None:
        self.calls.append("before_train")

    def after_step(self, step: int, losses: dict) -> None:
        assert "loss" in losses and self.trainer.step == step
        self.calls.append(f"step{step}")

    def after_eval(self, metrics: dict) -> None:
        self.calls.append(f"eval{metrics['accuracy'] >= 0}")

    def after_train(self) -> None:
        self.calls.append("after_train")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    torch.set_num_threads(1)
    hook = Recorder()
    metrics = toy_trainer(run_dir, "train.epochs=4", hooks=[hook]).train()
    return run_dir, metrics, hook.calls


def test_toy_learns_and_writes_run_folder(toy_run) -> None:
    run_dir, metrics, _ = toy_run
    assert metrics["accuracy"] > 0.75  # 4 classes: chance is 0.25
    for name in ("config.yaml", "model.safetensors", "last.safetensors", "last.pt", "metrics.json",
                 "metrics.jsonl", "loss.png", "lr.png", "metrics.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(4, 33, 4))  # log_every=4, 8 steps/epoch
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert train_rows[-1]["lr"] < 1e-3  # cosine annealed to ~0 at the end
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [8, 16, 24, 32]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["accuracy"] == metrics["accuracy"] and summary["step"] == 32
    best = max(r["accuracy"] for r in rows if r["kind"] == "eval")
    assert summary["best_accuracy"] == best


def test_hooks_see_every_step_and_eval(toy_run) -> None:
    calls = toy_run[2]
    assert calls[0] == "before_train" and calls[-1] == "after_train"
    assert [c for c in calls if c.startswith("step")] == [f"step{s}" for s in range(1, 33)]
    assert calls.count("evalTrue") == 4


def test_load_model_and_eval_tool_reproduce_best_metric(toy_run, capsys) -> None:
    run_dir, _, _ = toy_run
    model, task = load_model(run_dir)
    assert not model.training and task.name == "_toy" and task.class_names[0] == "class0"
    main = runpy.run_path(str(ROOT / "tools" / "eval.py"), run_name="tool")["main"]
    out = run_dir.parent / "eval.json"
    assert main([str(run_dir), "--out", str(out), "--device", "cpu"]) == 0
    evaluated = json.loads(out.read_text())
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert evaluated["accuracy"] == summary["best_accuracy"]  # model.safetensors = best
    assert "accuracy:" in capsys.readouterr().out


def test_predict_tool_delegates_to_task(toy_run, capsys) -> None:
    run_dir, _, _ = toy_run
    image = run_dir.parent / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    main = runpy.run_path(str(ROOT / "tools" / "predict.py"), run_name="tool")["main"]
    assert main([str(run_dir / "model.safetensors"), str(image), "--device", "cpu"]) == 0
    assert f"{image}: class" in capsys.readouterr().out


def test_backbone_weights_initialise_backbone(toy_run, tmp_path: Path) -> None:
    run_dir, _, _ = toy_run
    trained, _ = load_model(run_dir)
    trainer = toy_trainer(tmp_path, f"model.backbone_weights={run_dir / 'model.safetensors'}")
    for key, value in trained.backbone.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # the backbone loader skips these counters (frozen-BN files lack them)
        assert torch.equal(trainer.model.backbone.state_dict()[key], value), key
    assert not torch.equal(trainer.model.fc.weight, trained.fc.weight)  # head stays fresh


def test_schedule_shapes() -> None:
    assert lr_at(0.0, peak=1.0, warmup=0.1, kind="cosine") == 0.0
    assert lr_at(0.1, peak=1.0, warmup=0.1, kind="cosine") == pytest.approx(1.0)
    assert lr_at(0.55, peak=1.0, warmup=0.1, kind="cosine") == pytest.approx(0.5)
    assert lr_at(1.0, peak=1.0, warmup=0.1, kind="cosine") == pytest.approx(0.0)
    assert lr_at(0.0, peak=1.0, warmup=0.2, kind="onecycle") == pytest.approx(0.04)
    assert lr_at(0.6, peak=1.0, warmup=0.2, kind="onecycle") == pytest.approx(0.5)
    assert progress(10, 100, elapsed_s=30, budget_s=60) == 0.5  # time runs ahead of steps
    assert progress(80, 100, elapsed_s=30, budget_s=60) == 0.8
    assert progress(10, 100, elapsed_s=90, budget_s=60) == 1.0


def test_time_budget_stops_and_anneals(tmp_path: Path) -> None:
    trainer = toy_trainer(
        tmp_path, "train.epochs=100000", "train.max_minutes=0.02", "train.log_every=1"
    )
    metrics = trainer.train()
    assert 0 < trainer.step < trainer.total_steps and "accuracy" in metrics
    assert trainer.elapsed() >= 1.2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    assert lrs[-1] < 0.1 * max(lrs)  # the schedule followed the clock to its end
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == trainer.step


def test_allocator_setting_taken_by_glibc_only() -> None:
    """mallopt answers 0 for a value it refuses (above its 32 MiB mmap limit, say). It sets
    this process's allocator, as every CPU ``Trainer`` in the test session does anyway."""
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_ema_warms_up_instead_of_keeping_the_initial_weights() -> None:
    """A fixed decay of 0.999 would still hold 37 % of the random start after 1,000 steps; the
    warmed-up decay takes the model at step 1, then decays by 1 - (1 + step) ** (-2 / 3)."""
    model = torch.nn.Linear(3, 2)
    ema = build_ema(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=1)
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, step=8)  # timm counts from step 1: decay 1 - (1 + 7) ** (-2 / 3) = 0.75
    assert torch.allclose(ema.module.weight, torch.full((2, 3), 1.25))


def test_options_grad_accum_clip_ema_adamw(tmp_path: Path) -> None:
    trainer = toy_trainer(
        tmp_path, "train.epochs=2", "train.grad_accum=2", "train.clip_grad=1.0", "train.ema=0.9",
        "train.optimizer=adamw", "train.lr=0.01", "train.schedule=onecycle",
        "train.channels_last=true",
    )  # fmt: skip
    assert trainer.steps_per_epoch == 4
    assert trainer.train()["accuracy"] > 0.5
    best, _ = load_model(tmp_path / "model.safetensors")
    last, _ = load_model(tmp_path / "last.safetensors")
    assert torch.equal(best.fc.weight, trainer.ema.module.fc.weight)  # EMA weights are saved
    assert not torch.equal(best.fc.weight, last.fc.weight)
    groups = trainer.optimizer.param_groups
    assert groups[0]["weight_decay"] > 0 and groups[1]["weight_decay"] == 0.0  # no decay on BN/bias
    assert all(p.ndim <= 1 for p in groups[1]["params"])


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    """train.compile=true trains through torch.compile (inductor) and ends at the weights the
    eager run reaches, up to float reassociation in the fused kernels."""
    steps = ("train.epochs=1", "train.max_steps=3", "train.eval_every=100")
    eager = toy_trainer(tmp_path / "eager", *steps)
    eager.train()
    compiled = toy_trainer(tmp_path / "compiled", *steps, "train.compile=true")
    compiled.train()
    assert compiled.train_model is not compiled.model  # the compiled wrapper was trained
    got = compiled.model.state_dict()
    for name, want in eager.model.state_dict().items():
        torch.testing.assert_close(got[name], want, rtol=1e-3, atol=1e-4, msg=name)


def test_nan_loss_names_step_and_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real_step = ToyTask.train_step

    def poisoned(self, model, batch, device):
        calls["n"] += 1
        losses = real_step(self, model, batch, device)
        return {"loss": losses["loss"] * (float("nan") if calls["n"] >= 11 else 1.0)}

    monkeypatch.setattr(ToyTask, "train_step", poisoned)
    trainer = toy_trainer(tmp_path, "train.epochs=3", "train.log_every=20")  # 8 steps/epoch
    with pytest.raises(  # found at the evaluation after step 16: the epoch is the bad step's
        TrainingError,
        match=r"non-finite.*at step 11 \(epoch 2\).*last good checkpoint is '.*last.pt' \(step 8\)",
    ):
        trainer.train()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 8  # the NaN weights were never saved


def test_too_small_train_set_is_a_config_error(tmp_path: Path) -> None:
    from tasks.config import ConfigError

    with pytest.raises(ConfigError, match="fewer than train.batch_size"):
        toy_trainer(tmp_path, "data.train_size=16", "train.batch_size=32")


def test_a_data_error_leaves_no_run_folder(tmp_path: Path) -> None:
    from tasks import TASKS
    from tasks.images import DataError

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    for i in range(6):
        Image.new("RGB", (20, 10)).save(tmp_path / "data" / "images" / f"a{i}.png")
        Image.new("L", (20, 12 if i == 3 else 10)).save(tmp_path / "data" / "masks" / f"a{i}.png")
    cfg = load_config(
        TASKS.get("segment").config_class,
        overrides=[f"data.train={tmp_path / 'data'}", "data.num_classes=2", "data.in_memory=true"],
    )
    with pytest.raises(DataError, match="a3.png.*differs from image size"):
        Trainer(TASKS.create("segment", cfg=cfg), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_bad_file_mid_run_keeps_the_steps_trained(tmp_path: Path, monkeypatch) -> None:
    """Validation images decode lazily: one that is bad stops the run at an evaluation, and
    the training done before it is saved for ``--resume`` instead of lost."""
    from tasks.images import ImageDecodeError

    real_evaluate = ToyTask.evaluate
    calls = {"n": 0}

    def second_eval_fails(self, model, batches, device):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ImageDecodeError("cannot decode image '/data/val/7.jpg': truncated")
        return real_evaluate(self, model, batches, device)

    monkeypatch.setattr(ToyTask, "evaluate", second_eval_fails)
    with pytest.raises(ImageDecodeError, match=r"7\.jpg.*the 16 steps.*--resume .*run"):
        toy_trainer(tmp_path / "run", "train.epochs=3").train()  # 8 steps an epoch
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 16
    monkeypatch.setattr(ToyTask, "evaluate", real_evaluate)  # the file is fixed
    metrics = toy_trainer(tmp_path / "run", "train.epochs=3", resume=True).train()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 24
    assert metrics["accuracy"] >= 0


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_config_error_is_printed_by_rank_0_alone(rank, monkeypatch, capsys) -> None:
    """Under torchrun every rank parses the same config and meets the same mistake: one
    ``error:`` line (rank 0's), not one per rank; every rank still exits with status 2. A
    data error may be one rank's alone (its shard), so every rank prints those."""
    from tasks.cli import run_tool
    from tasks.images import DataError

    monkeypatch.setenv("RANK", rank)

    def bad_config() -> int:
        raise ConfigError("train.lr='x': expected a float")

    def bad_file() -> int:
        raise DataError("/data/a.jpg: not an image")

    assert run_tool(bad_config) == 2
    assert capsys.readouterr().err == (
        "error: train.lr='x': expected a float\n" if rank == "0" else ""
    )
    assert run_tool(bad_file) == 2
    assert capsys.readouterr().err == "error: /data/a.jpg: not an image\n"


def test_a_loader_worker_error_prints_as_one_line(capsys) -> None:
    """With ``train.num_workers > 0`` torch re-raises a worker's error with the worker's
    traceback in front; the tools print only the error's own message."""
    from torch.utils.data import DataLoader, Dataset

    from tasks.cli import run_tool
    from tasks.detect.records import AnnotationError

    class BadFile(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            raise AnnotationError("/data/a.xml: image '/data/a.jpg' is declared 4x4")

    def body() -> int:
        for _ in DataLoader(BadFile(), num_workers=1):
            pass
        return 0

    assert run_tool(body) == 2
    assert capsys.readouterr().err == "error: /data/a.xml: image '/data/a.jpg' is declared 4x4\n"


def test_out_folder_that_cannot_be_made_is_refused_first(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"'.*file' is a file, so the folder cannot be made"):
        toy_trainer(tmp_path / "file" / "run")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # read-only (tests run as root)
    with pytest.raises(ConfigError, match=r"is not writable \(read-only or no permission\)"):
        toy_trainer(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_too_small_train_set_leaves_no_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fewer than train.batch_size"):
        toy_trainer(tmp_path / "run", "data.train_size=16", "train.batch_size=32")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_is_one_line_with_the_resume_command(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = {"n": 0}
    real_step = ToyTask.train_step

    def interrupted(self, model, batch, device):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real_step(self, model, batch, device)

    monkeypatch.setattr(ToyTask, "train_step", interrupted)
    main = runpy.run_path(str(ROOT / "tools" / "train.py"), run_name="tool")["main"]
    run = tmp_path / "run"
    assert main(["--task", "_toy", "--quiet", "--out", str(run)]) == 130
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: interrupted at step 10; the last checkpoint is step 8: continue with "
        f"tools/train.py --resume {run}"
    )
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 8


def test_the_resume_hint_relaunches_as_the_run_was_launched() -> None:
    """A DDP run told to continue with plain tools/train.py would be refused (world size)."""
    from types import SimpleNamespace

    def hint(world_size: int) -> str:
        trainer = SimpleNamespace(dist=SimpleNamespace(world_size=world_size), run_dir=Path("r"))
        return Trainer._resume_command(trainer)

    assert hint(1) == "tools/train.py --resume r"
    assert hint(2) == "torchrun --nproc_per_node=2 tools/train.py --resume r"


def test_stopped_at_an_epochs_last_step_resumes_as_a_finished_epoch(tmp_path: Path) -> None:
    """``train.stop_after_steps`` on an epoch's last step saved the epoch as a full count of
    batches seen instead of ending it: a resume refused a new batch_size as if mid-epoch,
    and stopped on the run's last step, the resumed run reported epoch 0 of 1."""
    steps = ("train.epochs=2", "train.stop_after_steps=8")  # 8 steps per epoch
    assert toy_trainer(tmp_path / "a", *steps).train() is None
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 0)
    toy_trainer(tmp_path / "a", *steps, "train.batch_size=16", resume=True).train()
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"][:2] == [8, 24]  # 16 steps an epoch

    assert toy_trainer(tmp_path / "b", "train.epochs=1", "train.stop_after_steps=8").train() is None
    toy_trainer(tmp_path / "b", "train.epochs=1", resume=True).train()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["epoch"] == 1
