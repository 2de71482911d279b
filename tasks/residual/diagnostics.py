"""Residual diagnostics for any training run: an engine hook (``tasks.hooks.Hook``).

Every ``every`` optimizer steps it records, for the step it watched:

- ``grad/<stage>``: L2 norm of the parameter gradients of each stage (``stem``, ``layer1``..,
  ``head``), read from ``param.grad`` in ``after_step`` (still there before ``zero_grad``);
- ``branch_ratio/<stage>``: mean over the stage's blocks of ``||F(x)|| / ||S(x)||``, the size
  of the residual branch against the shortcut it is added to (small: the block is close to
  the identity; plain blocks have no shortcut and are left out);
- ``dead_relu/<stage>``: share of the channels of the stage's block ReLUs that are zero for
  every sample and position of the batch (dead units).

It also counts on-the-fly training accuracy from the head's logits and labels on every step
(the training error curve of He et al. 2015, Fig. 6): ``train_error`` is the error over the
training batches since the last row. Rows go to metrics.jsonl as ``{"kind": "residual", ...}``
and to TensorBoard as ``residual/<name>``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from tasks.hooks import Hook
from tasks.residual.gradients import residual_blocks, stage_of

ROW_KIND = "residual"


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def param_stage(name: str) -> str:
    """Stage of a parameter name: ``layerK`` inside the backbone, else ``stem`` (the rest of
    the backbone) or ``head`` (everything outside it)."""
    if ".layer" in f".{name}":
        return stage_of(name)
    return "stem" if name.startswith("backbone.") else "head"


def stage_grad_norms(model: nn.Module) -> dict[str, float]:
    """``{stage: ||dL/dtheta||}`` from the ``.grad`` of ``model``'s parameters."""
    sums: dict[str, Tensor] = {}
    for name, p in _unwrap(model).named_parameters():
        if p.grad is not None:
            key = param_stage(name)
            sq = p.grad.detach().float().pow(2).sum()
            sums[key] = sums[key] + sq if key in sums else sq
    return {k: float(v.sqrt()) for k, v in sums.items()}


class ResidualDiagnostics(Hook):
    """Engine hook; ``every``: optimizer steps between two measurements (and rows)."""

    def __init__(self, every: int = 50) -> None:
        if every < 1:
            raise ValueError(f"ResidualDiagnostics: every={every} must be >= 1 (steps per row)")
        self.every = every
        self._armed = False
        self._handles: list[Any] = []
        self._ratios: dict[str, list[float]] = defaultdict(list)
        self._dead: dict[str, list[float]] = defaultdict(list)
        self._hits = 0
        self._seen = 0

    # ---- hooks on the model ----------------------------------------------------------
    def before_train(self) -> None:
        model = _unwrap(self.trainer.model)
        self._armed = self.trainer.step % self.every == self.every - 1
        for name, block in residual_blocks(model):
            self._watch_block(block, stage_of(name))
        head = getattr(model, "head", None)
        if isinstance(head, nn.Module):
            self._handles.append(head.register_forward_hook(self._accuracy))

    def _watch_block(self, block: nn.Module, stage: str) -> None:
        """Hooks that record ``||F(x)|| / ||S(x)||`` and dead ReLU channels of one block.

        ``add_shortcut`` runs ``drop_path(F(x))`` first, then ``downsample(x)``: with an
        identity shortcut the ratio is known in the ``drop_path`` hook, with a projection in
        the ``downsample`` hook that follows it.
        """
        seen: dict[str, Tensor] = {}

        def on_input(module: nn.Module, inputs: tuple) -> None:
            if self._recording():
                seen["x"] = inputs[0]

        def on_branch(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if not self._recording() or not block.residual:
                return
            if block.downsample is None:
                self._ratios[stage].append(_ratio(output, seen.pop("x")))
            else:
                seen["branch"] = output

        def on_shortcut(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self._recording() and "branch" in seen:
                self._ratios[stage].append(_ratio(seen.pop("branch"), output))
            seen.clear()

        def on_relu(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self._recording():
                with torch.no_grad():
                    dead = (output.detach().amax(dim=(0, 2, 3)) <= 0).float().mean()
                self._dead[stage].append(float(dead))

        self._handles.append(block.register_forward_pre_hook(on_input))
        self._handles.append(block.drop_path.register_forward_hook(on_branch))
        if block.residual and block.downsample is not None:
            self._handles.append(block.downsample.register_forward_hook(on_shortcut))
        relu = getattr(block, "relu", None)
        if isinstance(relu, nn.Module):
            self._handles.append(relu.register_forward_hook(on_relu))

    def _recording(self) -> bool:
        """Only the training forward pass of an armed step is measured (not evaluation)."""
        return self._armed and torch.is_grad_enabled()

    def _accuracy(self, head: nn.Module, inputs: tuple, output: Any) -> None:
        targets = inputs[1] if len(inputs) > 1 else None
        preds = getattr(output, "preds", None)
        if not (head.training and isinstance(preds, Tensor) and isinstance(targets, Tensor)):
            return
        if preds.dim() != 2 or targets.dim() != 1:  # mixed (soft) labels: no accuracy
            return
        with torch.no_grad():
            self._hits += int((preds.argmax(1) == targets).sum())
        self._seen += len(targets)

    # ---- engine callbacks ------------------------------------------------------------
    def after_step(self, step: int, losses: dict[str, Tensor]) -> None:
        if self._armed:
            row: dict[str, float] = {"step": step}
            row.update({f"grad/{k}": v for k, v in stage_grad_norms(self.trainer.model).items()})
            row.update({f"branch_ratio/{k}": _mean(v) for k, v in self._ratios.items()})
            row.update({f"dead_relu/{k}": _mean(v) for k, v in self._dead.items()})
            if self._seen:
                row["train_error"] = 1.0 - self._hits / self._seen
                row["train_images"] = self._seen
                self._hits = self._seen = 0
            self._ratios.clear()
            self._dead.clear()
            self.trainer.logger.log_row(ROW_KIND, row)
        self._armed = step % self.every == self.every - 1

    def after_train(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _ratio(branch: Tensor, shortcut: Tensor) -> float:
    with torch.no_grad():
        return float(branch.float().norm() / shortcut.float().norm().clamp_min(1e-12))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
