"""The training loop shared by every task. A task supplies model, data, loss and metrics.

The loop, as pseudocode (one optimizer step = ``grad_accum`` micro-batches)::

    seed; task.build_datasets(); model = task.build_model() (+ model.backbone_weights)
    model -> device, channels_last, SyncBN + DDP when launched by torchrun
    optimizer, EMA, grad scaler; --resume: restore them + step, epoch, sampler position, RNG
    hooks.before_train()
    while step < total_steps and before the deadline:
        sampler.set_epoch(epoch, skip=batches already seen in this epoch)
        for each optimizer step in the epoch:
            lr = schedule(max(step / total_steps, elapsed / budget))
            for each micro-batch: with autocast: losses = task.train_step(model, batch, device)
                                  scaler.scale(losses["loss"] / grad_accum).backward()
            clip grads; scaler.step(optimizer); ema.update(model); step += 1
            every log_every steps: check losses are finite, log a metrics.jsonl row
            hooks.after_step(step, losses)
            stop at max_steps, stop_after_steps (saves last.pt) or the deadline
        epoch += 1; every eval_every epochs: evaluate, keep the best, save last.pt
    final evaluation (EMA weights when on); best -> model.safetensors; metrics.json; plots
    hooks.after_train()

DDP: every rank trains on its shard (``DistributedSampler``); rank 0 alone evaluates the whole
validation set with ``task.evaluate`` (simplest correct choice: no per-task gather logic) and
broadcasts the metrics; on the CPU it borrows the threads of the ranks that sleep meanwhile.
Rank 0 alone writes files. Wall-clock time is agreed across ranks (all-reduce max) every step
on the CPU and every ``log_every`` steps on CUDA, so LR and stop decisions stay identical on
every rank. No ``.item()`` per step: losses are accumulated on the device and read every
``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tasks import checkpoint as ckpt
from tasks import data, distributed
from tasks import resume as resume_state
from tasks.base import Task
from tasks.config import ConfigError, config_to_yaml
from tasks.hooks import Hook
from tasks.images import DataError
from tasks.logging_utils import METRICS_JSON, RunLogger, scalars
from tasks.optim import build_ema, build_optimizer
from tasks.plots import plot_run
from tasks.residual.diagnostics import ResidualDiagnostics
from tasks.schedule import lr_at, progress
from tasks.weights import load_backbone_weights

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, a task breaking its contract)."""


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def check_writable_dir(run_dir: Path, option: str = "--out") -> None:
    """``run_dir`` is, or can be made as, a folder this process may write into; checked
    before the data and model are built, so a typo costs no start-up time and leaves no
    traceback from ``mkdir`` or the first checkpoint (``tools/predict.py --out`` too)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{option} {str(run_dir)!r} is a file; expected a folder")
    base = run_dir.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise ConfigError(
            f"{option} {str(run_dir)!r}: {str(base)!r} is a file, so the folder cannot be "
            "made there; expected a folder path"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {str(run_dir)!r}: folder {str(base)!r} is not writable (read-only or "
            "no permission); choose another folder"
        )


def check_new_run_dir(run_dir: Path) -> None:
    """A fresh run's folder must not be a file or hold another run, which it would overwrite
    (weights, config) and mix into (metrics.jsonl is appended to)."""
    check_writable_dir(run_dir)
    found = [n for n in (ckpt.CONFIG_FILE, ckpt.LAST_STATE, ckpt.BEST_WEIGHTS, METRICS_JSON)
             if (run_dir / n).exists()]  # fmt: skip
    if found == [ckpt.CONFIG_FILE]:  # a run that failed or was stopped before saving
        raise ConfigError(
            f"--out {str(run_dir)!r} holds a run that stopped before its first checkpoint "
            "(only config.yaml): nothing to resume; delete the folder or choose a new --out"
        )
    if found:
        raise ConfigError(
            f"--out {str(run_dir)!r} already holds a run ({', '.join(found)}); continue it "
            f"with tools/train.py --resume {run_dir}, or choose a new --out folder"
        )


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of handing them
    back to the kernel; True when the C library took the setting (glibc only; else a no-op).

    Why: a training step on the CPU frees and reallocates the same activation-sized buffers
    every step, and with glibc's defaults many come back as fresh pages that the kernel must
    fault in and zero: ResNet-20 at batch 128 took ~4x fewer page faults and the engine ran
    ~9.5 % more images/s on 2 cores with this (docs/benchmarks.md). Cost: the process keeps
    its peak memory instead of returning it between steps.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    kept = libc.mallopt(m_mmap_threshold, 32 << 20)
    return bool(kept and libc.mallopt(m_trim_threshold, 1 << 30))


class Trainer:
    """Runs one task's training into ``run_dir``; ``train()`` returns the final metrics.

    hooks:  ``Hook`` instances (see ``tasks.hooks``).
    resume: continue from ``run_dir/last.pt`` and ``last.safetensors``.
    quiet:  no console output (files are still written).
    """

    def __init__(
        self,
        task: Task,
        run_dir: str | Path,
        *,
        hooks: Sequence[Hook] = (),
        resume: bool = False,
        quiet: bool = False,
    ) -> None:
        self.task, self.cfg = task, task.cfg.train
        cfg = self.cfg
        self.run_dir = Path(run_dir)
        self.dist = distributed.init_distributed(cfg.device)
        self.device = self.dist.device
        on_cuda = self.device.type == "cuda"
        self.amp = AMP_DTYPES.get(cfg.amp) if on_cuda else None
        if self.device.type == "cpu":
            keep_freed_memory()
        if not resume:
            check_new_run_dir(self.run_dir)
        else:
            check_writable_dir(self.run_dir, "--resume")
        seed_everything(cfg.seed, cfg.deterministic)
        # data, model, weights and optimizer first: an error there leaves no run folder behind
        self.train_set, self.val_set = task.build_datasets()
        model = task.build_model()
        notes = []  # printed once the run folder and its logger exist
        if cfg.amp != "none" and not on_cuda:
            notes.append(f"note: train.amp={cfg.amp} needs CUDA; training in float32 on CPU")
        if getattr(task.cfg.model, "backbone_weights", None):
            report = load_backbone_weights(model, task.cfg.model.backbone_weights)
            notes.append(f"backbone weights: {report}")
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.dist.enabled and cfg.sync_bn:
            if on_cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                notes.append("note: train.sync_bn needs CUDA; BatchNorm stays per process")
        self.sampler = data.ResumableSampler(self.train_set, self.dist, cfg.seed)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training set has {len(self.sampler)} samples per process, fewer than "
                f"train.batch_size x train.grad_accum = {cfg.batch_size * cfg.grad_accum}; "
                "lower train.batch_size"
            )
        self.model = model  # the plain module: what is saved and evaluated
        self.optimizer = build_optimizer(model, cfg)
        self.ema = build_ema(model, cfg.ema)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier(self.dist)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, quiet=quiet)
        for note in notes:
            self.logger.print(note)
        self.train_model: nn.Module = model
        if self.dist.enabled:
            ids = [self.device.index] if on_cuda else None
            self.train_model = DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:  # evaluation and checkpoints keep using the plain ``self.model``
            self.train_model = torch.compile(self.train_model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp is torch.float16)
        self.hooks = list(hooks)
        if cfg.diagnostics_every:
            self.hooks.append(ResidualDiagnostics(cfg.diagnostics_every))
        for hook in self.hooks:
            hook.trainer = self

        epochs_steps = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(epochs_steps, cfg.max_steps) if cfg.max_steps > 0 else epochs_steps
        self.budget_s = cfg.max_minutes * 60.0
        self.val_loader = data.val_loader(
            self.val_set,
            batch_size=task.val_batch_size(self.val_set),
            collate=task.collate,
            num_workers=cfg.num_workers,
        )
        self.metadata = ckpt.weights_metadata(
            task.name, config_to_yaml(task.cfg), list(task.class_names)
        )

        self.step = self.epoch = self.batch_in_epoch = 0
        self.elapsed_before = 0.0  # seconds trained before this process (resume)
        self.best_metric: float | None = None
        self.best_step = -1
        self.last_saved_step = -1
        self.last_eval_step = -1
        self.resumed = resume
        if resume:
            resume_state.restore(self, ckpt.load_state(self.run_dir / ckpt.LAST_STATE))
        if self.dist.is_main:  # on resume too: overrides given then are part of the run now
            ckpt.atomic_write_text(self.run_dir / ckpt.CONFIG_FILE, config_to_yaml(task.cfg))
        if self.dist.rank > 0:  # different augmentation per rank, same model init
            seed_everything(cfg.seed + 1000 * self.dist.rank + self.step, cfg.deterministic)
        self._loss_sums: dict[str, Tensor] = {}
        self._micro_batches = 0
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        # DDP agrees on the clock with an all-reduce: every step on the CPU (microseconds
        # beside a step of hundreds of ms), every log_every steps on CUDA (a host sync)
        self._sync_every = cfg.log_every if self.dist.enabled and on_cuda else 1

    # ----------------------------------------------------------------------------- the loop
    def train(self) -> dict[str, Any] | None:
        """Train to the end; returns the final metrics, or None when ``stop_after_steps`` hit."""
        try:
            return self._train()
        except DataError as err:
            raise self._keep_progress(err) from None
        except KeyboardInterrupt:  # Ctrl-C: the files on disk are whole; say how to go on
            raise KeyboardInterrupt(self._interrupted_message()) from None
        finally:
            self.logger.close()

    def _resume_command(self) -> str:
        """The command that continues this run, as it was launched (torchrun for DDP)."""
        launch = "tools/train.py"
        if self.dist.world_size > 1:
            launch = f"torchrun --nproc_per_node={self.dist.world_size} {launch}"
        return f"{launch} --resume {self.run_dir}"

    def _interrupted_message(self) -> str:
        if self.last_saved_step < 0:
            return f"interrupted at step {self.step}, before the first checkpoint of {self.run_dir}"
        return (
            f"interrupted at step {self.step}; the last checkpoint is step "
            f"{self.last_saved_step}: continue with {self._resume_command()}"
        )

    def _keep_progress(self, err: DataError) -> DataError:
        """A bad file met mid-run (images decode lazily; validation images only when first
        evaluated): save what was trained, so fixing the file and resuming loses nothing.
        Single process only: a DDP peer may be waiting in a collective. Weights, optimizer and
        sampler position are those of the last finished step; the RNG states are taken now,
        after the failed step's draws, so the continuation is a valid run but not bit-equal
        to an uninterrupted one (the data changed anyway)."""
        if self.dist.enabled or self.step == 0:
            return err
        self.save_last()
        return type(err)(
            f"{data.worker_error_message(err)}; the {self.step} steps trained so far are "
            f"saved: fix the file and continue with: tools/train.py --resume {self.run_dir}"
        )

    def _train(self) -> dict[str, Any] | None:
        cfg = self.cfg
        self._t0 = time.monotonic()
        self._synced_elapsed = self._saved_at = self.elapsed_before
        self._save_due = False
        done = self.run_dir / METRICS_JSON
        if self.resumed and self._finished() and done.is_file():
            summary = json.loads(done.read_text())
            if summary.get("step") == self.step:  # the final evaluation already ran
                self.logger.print(
                    f"{self.run_dir} finished at step {self.step}; nothing to resume (raise "
                    "train.epochs, train.max_steps or train.max_minutes to train on)"
                )
                return summary
        self.model.train()
        for hook in self.hooks:
            hook.before_train()
        while not self._finished():
            self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * cfg.batch_size)
            loader = data.train_loader(
                self.train_set,
                self.sampler,
                batch_size=cfg.batch_size,
                collate=self.task.collate,
                default_collate=type(self.task).collate is Task.collate,
                num_workers=cfg.num_workers,
                seed=cfg.seed * 100_003 + self.epoch,
                pin_memory=self.device.type == "cuda",
            )
            batches = iter(loader)
            done = self.batch_in_epoch // cfg.grad_accum
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=done,
                desc=f"epoch {self.epoch + 1}",
                disable=not self.logger.show_progress,
                leave=False,
            )
            for _ in range(done, self.steps_per_epoch):
                self._optimizer_step(batches)
                bar.update(1)
                if self.step % self._sync_every == 0:
                    self._sync_time()
                if self.step % cfg.log_every == 0:
                    self._log_train()
                for hook in self.hooks:
                    hook.after_step(self.step, self._last_losses)
                if self.step == cfg.stop_after_steps:  # reached here, not resumed past it
                    bar.close()
                    # on the epoch's last step: saved as a finished epoch, as a run killed
                    # after its epoch-end checkpoint (not as a full count of batches, which
                    # resumed as mid-epoch and, at the run's last step, never counted it)
                    self._end_epoch_if_complete()
                    self.save_last()
                    self.logger.print(
                        f"stopped at step {self.step} (train.stop_after_steps); continue with "
                        f"{self._resume_command()}"
                    )
                    return None
                if self._finished():
                    break
                if self._save_due:
                    self.save_last()
            bar.close()
            self._end_epoch_if_complete()
        return self._finish()

    def _optimizer_step(self, batches: Any) -> None:
        cfg = self.cfg
        p = progress(self.step + 1, self.total_steps, self._synced_elapsed, self.budget_s)
        lr = lr_at(p, peak=cfg.lr, warmup=cfg.warmup, kind=cfg.schedule)
        self.task.progress = p
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._lr = lr
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            last = micro == cfg.grad_accum - 1
            no_sync = getattr(self.train_model, "no_sync", None)
            with no_sync() if (no_sync and not last) else contextlib.nullcontext():
                with self._autocast():
                    losses = self.task.train_step(self.train_model, batch, self.device)
                self.scaler.scale(losses["loss"] / cfg.grad_accum).backward()
            self._accumulate(losses)
        if cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.batch_in_epoch += cfg.grad_accum
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)

    def _autocast(self) -> Any:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _accumulate(self, losses: dict[str, Tensor]) -> None:
        """Sum losses on the device (no host sync); remember the first non-finite step."""
        if "loss" not in losses:
            raise TrainingError(
                f"task {self.task.name!r}: train_step must return a dict with key 'loss', "
                f"got keys {sorted(losses)}"
            )
        self._last_losses = {k: v.detach() for k, v in losses.items()}
        for key, value in self._last_losses.items():
            value = value.float()
            self._loss_sums[key] = self._loss_sums.get(key, 0) + value
        bad = ~torch.isfinite(self._last_losses["loss"]) & (self._bad_step < 0)
        self._bad_step = torch.where(bad, self.step + 1, self._bad_step)
        self._micro_batches += 1

    # ------------------------------------------------------------------ time, stop, checks
    def elapsed(self) -> float:
        """Seconds of training so far, this process's clock (resumed runs included)."""
        return self.elapsed_before + time.monotonic() - self._t0

    def _sync_time(self) -> None:
        """Agree on elapsed time (max over ranks) and on whether a checkpoint is due, so LR,
        stopping and saving stay identical on every rank."""
        elapsed = self.elapsed()
        minutes = self.cfg.checkpoint_minutes
        due = self.dist.is_main and minutes > 0 and elapsed - self._saved_at >= minutes * 60
        if self.dist.enabled:
            both = torch.tensor([elapsed, float(due)], dtype=torch.float64, device=self.device)
            elapsed, due = distributed.all_reduce(self.dist, both, "max").tolist()
        self._synced_elapsed, self._save_due = elapsed, bool(due)

    def _finished(self) -> bool:
        out_of_time = self.budget_s > 0 and self._synced_elapsed >= self.budget_s
        return self.step >= self.total_steps or out_of_time

    def check_finite(self) -> None:
        """Raise ``TrainingError`` naming the step when a loss went NaN/inf (a host sync)."""
        bad = int(distributed.all_reduce(self.dist, self._bad_step.clone(), "max"))
        if bad < 0:
            return
        last = self.run_dir / ckpt.LAST_STATE
        good = (
            f"the last good checkpoint is {str(last)!r} (step {self.last_saved_step})"
            if self.last_saved_step >= 0
            else "no checkpoint was saved before it"
        )
        # checked every log_every steps and at evaluations: the bad step may be in an earlier
        # epoch than the current one
        epoch_start = self.step - self.batch_in_epoch // self.cfg.grad_accum
        epoch = self.epoch + 1
        if bad <= epoch_start:
            epoch = self.epoch - (epoch_start - bad) // self.steps_per_epoch
        raise TrainingError(
            f"loss became non-finite (nan/inf) at step {bad} (epoch {epoch}); {good}. "
            "Lower train.lr, set train.clip_grad, or check the data"
        )

    # ---------------------------------------------------------------------------- logging
    def _log_train(self) -> None:
        self.check_finite()
        keys = sorted(self._loss_sums)
        sums = torch.stack([self._loss_sums[k] for k in keys])
        sums = distributed.all_reduce(self.dist, sums).tolist()
        count = self._micro_batches * self.dist.world_size
        row = {"step": self.step, "epoch": self.epoch + 1, "lr": self._lr}
        row.update({k: s / count for k, s in zip(keys, sums, strict=True)})
        row["elapsed_s"] = round(self.elapsed(), 3)
        self.logger.log_row("train", row)
        self._train_row = row
        self._loss_sums, self._micro_batches = {}, 0

    def _end_epoch_if_complete(self) -> None:
        """After an epoch's last batch: count the epoch, then ``_end_epoch``."""
        if self.batch_in_epoch == self.steps_per_epoch * self.cfg.grad_accum:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._end_epoch()

    def _end_epoch(self) -> None:
        line = f"epoch {self.epoch}: step {self.step}/{self.total_steps}"
        row = getattr(self, "_train_row", None)
        if row is not None and row["step"] > self.step - self.steps_per_epoch:  # this epoch's
            line += f", train loss {row['loss']:.4f}, lr {row['lr']:.3g}"
        if self.epoch % self.cfg.eval_every == 0 and not self._finished():
            metrics = self.evaluate()
            line += "".join(f", val {k} {v:.4f}" for k, v in scalars(metrics).items())
        self.logger.print(line + f" ({self.elapsed():.0f} s)")
        if not self._finished():
            self.save_last()

    # ------------------------------------------------------------------------- evaluation
    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved as best: EMA when on."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict[str, Any]:
        """Rank 0 evaluates the full validation set; every rank gets the metrics."""
        self.check_finite()
        metrics = None
        if self.dist.is_main:
            model = self.eval_model
            model.eval()
            with torch.no_grad(), self._autocast(), distributed.borrow_local_threads(self.dist):
                metrics = self.task.evaluate(model, self.val_loader, self.device)
            self.model.train()
            key = self.task.primary_metric
            if key not in metrics:
                raise TrainingError(
                    f"task {self.task.name!r}: evaluate() returned keys {sorted(metrics)}, "
                    f"missing its primary_metric {key!r}"
                )
        metrics = distributed.broadcast_object(self.dist, metrics)
        self.last_eval_step, self.last_metrics = self.step, metrics
        row = {"step": self.step, "epoch": self.epoch, **metrics}
        self.logger.log_row("eval", {**row, "elapsed_s": round(self.elapsed(), 3)})
        value = float(metrics[self.task.primary_metric])
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step = value, self.step
            if self.dist.is_main:
                state = self.eval_model.state_dict()
                ckpt.save_weights(self.run_dir / ckpt.BEST_WEIGHTS, state, self.metadata)
        for hook in self.hooks:
            hook.after_eval(metrics)
        return metrics

    def _finish(self) -> dict[str, Any]:
        self._sync_time()
        if self.step % self.cfg.log_every != 0 and self._micro_batches:
            self._log_train()
        metrics = self.evaluate() if self.last_eval_step != self.step else self.last_metrics
        self.save_last()
        if not distributed.replicas_equal(self.dist, self.model):
            raise TrainingError("DDP replicas diverged: their final weights differ")
        summary = {
            **metrics,
            "step": self.step,
            "epoch": self.epoch,
            "elapsed_s": round(self.elapsed(), 3),
            f"best_{self.task.primary_metric}": self.best_metric,
            "best_step": self.best_step,
            "world_size": self.dist.world_size,
            "ddp_backend": distributed.backend(self.dist),
            "weights_equal_across_ranks": True,
        }
        self.logger.write_json(METRICS_JSON, summary)
        pictures: list[Path] = []
        if self.dist.is_main:
            pictures += plot_run(self.run_dir)
            pictures += self.task.visualize(
                self.eval_model, self.val_set, self.run_dir, self.device
            )
        self.logger.print(
            f"done: step {self.step}, {self.task.primary_metric} "
            f"{float(metrics[self.task.primary_metric]):.4f} -> {self.run_dir}"
        )
        if pictures:
            self.logger.print("pictures: " + ", ".join(str(p) for p in pictures))
        for hook in self.hooks:
            hook.after_train()
        return metrics

    def save_last(self) -> None:
        """Write last.safetensors + last.pt (rank 0); checks the losses are finite first."""
        self.check_finite()
        if self.dist.is_main:
            state = resume_state.capture(self)
            ckpt.save_resumable(self.run_dir, self.model.state_dict(), self.metadata, state)
        self.last_saved_step, self._saved_at, self._save_due = self.step, self.elapsed(), False
