"""Learning rate as a pure function of training progress in [0, 1].

Progress is ``max(step / total_steps, elapsed / budget)``: with a time budget
(``train.max_minutes``) the schedule anneals to its end exactly at the deadline, whatever the
hardware speed; without one it is the usual step-based schedule. Because the LR depends only
on ``(step, elapsed)``, resuming a run restores the schedule by restoring those two numbers.
"""

from __future__ import annotations

import math

from tasks.config import ConfigError

ONECYCLE_START = 1 / 25  # onecycle starts at peak / 25 (as torch OneCycleLR's div_factor)


def progress(step: int, total_steps: int, elapsed_s: float, budget_s: float) -> float:
    """Fraction of the run done, in [0, 1]; ``budget_s <= 0`` means no time budget."""
    by_steps = step / total_steps if total_steps > 0 else 0.0
    by_time = elapsed_s / budget_s if budget_s > 0 else 0.0
    return min(1.0, max(by_steps, by_time))


def lr_at(p: float, *, peak: float, warmup: float, kind: str) -> float:
    """LR at progress ``p``.

    cosine:   linear warm-up from 0 to ``peak`` over the first ``warmup`` fraction, then a
              half cosine down to 0.
    onecycle: linear from ``peak / 25`` to ``peak`` over ``warmup``, then linear down to 0
              (the triangular schedule of fast CIFAR recipes).
    """
    if kind not in ("cosine", "onecycle"):
        raise ConfigError(f"train.schedule={kind!r} is not one of cosine, onecycle")
    if p < warmup:
        start = ONECYCLE_START * peak if kind == "onecycle" else 0.0
        return start + (peak - start) * p / warmup
    rest = (p - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0
    if kind == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * rest))
    return peak * (1.0 - rest)
