"""The degradation experiment (He et al. 2015, Fig. 6): plain vs residual twins at two depths.

Four classification runs with one recipe and one time budget each (``plain-20``,
``plain-56``, ``resnet20``, ``resnet56``), trained by the shared engine with the
``ResidualDiagnostics`` hook, which measures training error on the fly from the training
batches. The expected outcome on CIFAR-10: the deeper *plain* net has the higher training
error (degradation: an optimisation problem, not overfitting), the deeper *residual* net the
lower. ``verdict`` states what the measured numbers show, and says so when they are within
noise or the nets have not left the initial plateau (budget too short).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.logging_utils import read_rows
from tasks.residual.diagnostics import ROW_KIND, ResidualDiagnostics

NETS: tuple[tuple[str, str, int], ...] = (
    # (backbone name, family, depth)
    ("resnet20_plain", "plain", 20),
    ("resnet56_plain", "plain", 56),
    ("resnet20", "residual", 20),
    ("resnet56", "residual", 56),
)

# One recipe for all four nets, close to He et al. 2015 (sec. 4.2) where the budget allows:
# no zero-init of the last BN (a plain net would start dead), plain cross-entropy.
RECIPE: tuple[str, ...] = (
    "model.zero_init_residual=false",
    "model.label_smoothing=0.0",
    "train.epochs=100000",  # the time budget ends each run, and shapes its LR schedule
    "train.eval_every=1",  # validate every epoch (and always at the end)
    "train.checkpoint_minutes=0",
)
FINAL_WINDOW = 0.2  # the final training error averages the rows of the last 20% of steps
PLATEAU_MARGIN = 0.1  # a net within this of the chance error has not left the plateau


@dataclass
class RunCurves:
    """One net's curves and final numbers (errors are fractions in 0..1)."""

    backbone: str
    family: str
    depth: int
    run_dir: str
    train_steps: list[int] = field(default_factory=list)
    train_error: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    final_train_error: float = math.nan
    final_train_images: int = 0  # training images behind final_train_error
    final_val_error: float = math.nan
    val_images: int = 0
    steps: int = 0
    elapsed_s: float = 0.0


def read_curves(
    run_dir: Path, backbone: str, family: str, depth: int, val_images: int
) -> RunCurves:
    """Training error (``residual`` rows) and validation error (``eval`` rows) of one run."""
    rows = read_rows(Path(run_dir))
    out = RunCurves(backbone, family, depth, str(run_dir), val_images=val_images)
    diag = [r for r in rows if r.get("kind") == ROW_KIND and "train_error" in r]
    for r in diag:
        out.train_steps.append(int(r["step"]))
        out.train_error.append(float(r["train_error"]))
    for r in rows:
        if r.get("kind") == "eval" and "top1" in r:
            out.val_steps.append(int(r["step"]))
            out.val_error.append(1.0 - float(r["top1"]))
            out.elapsed_s = float(r.get("elapsed_s", out.elapsed_s))
    out.steps = max(out.train_steps + out.val_steps, default=0)
    if diag:
        start = out.steps * (1 - FINAL_WINDOW)
        last = [r for r in diag if r["step"] >= start] or diag[-1:]
        images = sum(int(r.get("train_images", 1)) for r in last)
        errors = sum(float(r["train_error"]) * int(r.get("train_images", 1)) for r in last)
        out.final_train_error, out.final_train_images = errors / max(images, 1), images
    if out.val_error:
        out.final_val_error = out.val_error[-1]
    return out


def _se(p: float, n: int) -> float:
    """Binomial standard error of an error rate ``p`` measured on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def compare(shallow: RunCurves, deep: RunCurves, expect_deeper_worse: bool) -> dict[str, Any]:
    """Deep minus shallow final training error, its noise (2 standard errors) and a finding:
    ``"as expected"``, ``"opposite"`` or ``"within noise"``."""
    diff = deep.final_train_error - shallow.final_train_error
    noise = 2 * math.hypot(
        _se(shallow.final_train_error, shallow.final_train_images),
        _se(deep.final_train_error, deep.final_train_images),
    )
    if not math.isfinite(diff) or abs(diff) <= noise:
        finding = "within noise"
    elif (diff > 0) == expect_deeper_worse:
        finding = "as expected"
    else:
        finding = "opposite"
    return {"train_error_diff": diff, "noise_2se": noise, "finding": finding}


def verdict(runs: Sequence[RunCurves], num_classes: int) -> dict[str, Any]:
    """The experiment's conclusion from the numbers, with an honest reason when it is open."""
    by = {(r.family, r.depth): r for r in runs}
    plain = compare(by["plain", 20], by["plain", 56], expect_deeper_worse=True)
    residual = compare(by["residual", 20], by["residual", 56], expect_deeper_worse=False)
    chance = 1.0 - 1.0 / num_classes
    stuck = [
        r.backbone
        for r in runs
        if not r.final_train_error < chance - PLATEAU_MARGIN  # nan counts as stuck
    ]
    lines = [
        f"plain: plain-56 minus plain-20 training error = {plain['train_error_diff']:+.3f} "
        f"(noise +-{plain['noise_2se']:.3f}): {plain['finding']} (expected: higher)",
        f"residual: resnet56 minus resnet20 training error = "
        f"{residual['train_error_diff']:+.3f} (noise +-{residual['noise_2se']:.3f}): "
        f"{residual['finding']} (expected: lower)",
    ]
    shown = plain["finding"] == residual["finding"] == "as expected" and not stuck
    if shown:
        lines.append(
            "VERDICT: degradation shown: the deeper plain net trains worse, the deeper "
            "residual net better (He et al. 2015, Fig. 6)."
        )
    else:
        reasons = []
        if stuck:
            reasons.append(
                f"{', '.join(stuck)} did not leave the initial plateau (training error "
                f">= {chance - PLATEAU_MARGIN:.2f}, chance is {chance:.2f})"
            )
        if "within noise" in (plain["finding"], residual["finding"]):
            reasons.append("a depth difference is within noise")
        if "opposite" in (plain["finding"], residual["finding"]):
            reasons.append("a depth difference points the other way")
        lines.append(
            "VERDICT: not shown at this budget: " + "; ".join(reasons) + ". The effect "
            "needs tens of epochs on CIFAR-10 (He et al. train 64k steps); raise "
            "--budget-minutes or use a GPU."
        )
    return {"shown": shown, "plain": plain, "residual": residual, "stuck": stuck, "text": lines}


def run_degradation(
    out_dir: Path,
    *,
    budget_minutes: float,
    overrides: Sequence[str] = (),
    log_every: int = 10,
    quiet: bool = True,
) -> tuple[list[RunCurves], int]:
    """Train the four nets into ``out_dir/<backbone>``, each for ``budget_minutes / 4``.

    overrides: ``key=value`` settings for every run (``data.train=DIR``, ``train.lr=...``),
    applied after ``RECIPE``. Returns the curves and the number of classes.
    """
    import tasks.classify  # noqa: F401 - registers the classify task
    from tasks.base import TASKS
    from tasks.classify.config import ClassifyConfig
    from tasks.config import ConfigError, load_config
    from tasks.engine import Trainer

    if not budget_minutes > 0:
        raise ConfigError(f"--budget-minutes={budget_minutes}: expected a positive number")
    for item in overrides:
        if item.split("=", 1)[0].strip() in ("model.backbone", "train.max_minutes"):
            raise ConfigError(
                f"override {item!r}: the degradation experiment sets model.backbone and "
                "train.max_minutes itself (use --budget-minutes)"
            )
    runs, num_classes = [], 0
    for backbone, family, depth in NETS:
        settings = [
            *RECIPE,
            f"train.log_every={log_every}",
            *overrides,
            f"model.backbone={backbone}",
            f"train.max_minutes={budget_minutes / len(NETS)}",
        ]
        cfg = load_config(ClassifyConfig, None, settings)
        task = TASKS.create("classify", cfg=cfg)
        run_dir = Path(out_dir) / backbone
        trainer = Trainer(task, run_dir, hooks=[ResidualDiagnostics(every=log_every)], quiet=quiet)
        print(f"degradation: training {backbone} for {budget_minutes / len(NETS):.2f} min")
        trainer.train()
        num_classes = len(task.class_names)
        curves = read_curves(run_dir, backbone, family, depth, len(trainer.val_set))
        print(
            f"  {backbone}: {curves.steps} steps, final training error "
            f"{curves.final_train_error:.3f}, validation error {curves.final_val_error:.3f}"
        )
        runs.append(curves)
    return runs, num_classes


def curves_json(runs: Sequence[RunCurves], result: dict[str, Any], **info: Any) -> dict:
    """Everything the figure shows plus the verdict, for ``degradation.json``."""
    return {**info, "verdict": result, "runs": [asdict(r) for r in runs]}
