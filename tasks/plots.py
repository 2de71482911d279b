"""PNG plots for run folders: curves of a finished run (loss, learning rate, validation
metrics) from metrics.jsonl, and confusion matrices (classification, segmentation).

This module selects matplotlib's headless backend; every figure of the project is written
by ``save_figure``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after selecting the headless backend
from torch import Tensor  # noqa: E402

from tasks.logging_utils import read_rows, scalars  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it to ``path`` (parent folders made; ``dpi`` None = the
    figure's own) and free it; returns ``path``."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _plot(path: Path, series: dict[str, tuple[list[int], list[float]]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (steps, values) in series.items():
        ax.plot(steps, values, label=name, marker="o" if len(steps) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    save_figure(fig, path)


def _series(rows: list[dict], kind: str, skip: tuple[str, ...] = ()) -> dict:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        if row.get("kind") != kind:
            continue
        for name, value in scalars(row).items():
            if name not in skip:
                steps, values = out.setdefault(name, ([], []))
                steps.append(row["step"])
                values.append(value)
    return out


def plot_run(run_dir: Path) -> list[Path]:
    """Writes loss.png, lr.png and metrics.png into ``run_dir``; returns the paths written."""
    rows = read_rows(run_dir)
    train = _series(rows, "train", skip=("elapsed_s", "images_per_s"))
    lr = {"lr": train.pop("lr")} if "lr" in train else {}
    evals = _series(rows, "eval", skip=("elapsed_s",))
    written = []
    for name, series, title in (
        ("loss.png", train, "training losses"),
        ("lr.png", lr, "learning rate"),
        ("metrics.png", evals, "validation metrics"),
    ):
        if series:
            _plot(run_dir / name, series, title)
            written.append(run_dir / name)
    return written


def plot_confusion(cm: Tensor, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Write a row-normalised confusion matrix PNG (rows = ground truth, columns =
    prediction, counts in the cells) for classification and segmentation alike."""

    k = len(class_names)
    norm = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(2 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, c=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised, counts in cells)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path, dpi=100)
