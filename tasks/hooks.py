"""Hooks: code that watches or extends the training loop without editing it.

The trainer sets ``hook.trainer`` before ``before_train``, so a hook reads anything it needs
(``trainer.model``, ``trainer.optimizer``, ``trainer.logger``, ``trainer.step``). Hooks run on
every rank; guard file writes with ``trainer.dist.is_main``.

``after_step`` runs after ``optimizer.step()`` and before the next ``zero_grad``, so the
gradients of the step are still in ``param.grad`` (per-stage gradient norms, for example).
Its ``losses`` are detached device tensors: call ``.item()`` only every few steps, it waits for
the device. Log scalars with ``trainer.logger.log_scalars(step, {"grad/c3": ...})``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


class Hook:
    """Base class with no-op methods; override the ones you need."""

    trainer: Any = None

    def before_train(self) -> None:
        """After set-up and resume, before the first step."""

    def after_step(self, step: int, losses: dict[str, Tensor]) -> None:
        """After optimizer step number ``step`` (1-based)."""

    def after_eval(self, metrics: dict[str, Any]) -> None:
        """After each validation (on every rank; metrics are rank 0's, broadcast)."""

    def after_train(self) -> None:
        """After the final evaluation and checkpoint."""
