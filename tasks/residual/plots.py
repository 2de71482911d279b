"""Figures of the residual lab: degradation curves and gradient norms through depth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.plots import plt, save_figure
from tasks.residual.degradation import RunCurves
from tasks.residual.gradients import BlockStats

_DEPTH_COLOURS = {20: "tab:orange", 56: "tab:red"}


def plot_degradation(runs: Sequence[RunCurves], path: Path, title: str) -> Path:
    """He et al. 2015, Fig. 6 layout: plain nets left, residual nets right; thin lines are
    training error (on-the-fly, from the training batches), bold lines validation error."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    for ax, family in zip(axes, ("plain", "residual"), strict=True):
        for r in (r for r in runs if r.family == family):
            colour = _DEPTH_COLOURS.get(r.depth, None)
            label = f"{family}-{r.depth}" if family == "plain" else f"ResNet-{r.depth}"
            ax.plot(
                r.train_steps,
                [100 * e for e in r.train_error],
                color=colour,
                lw=0.9,
                alpha=0.8,
                label=f"{label} train",
            )
            ax.plot(
                r.val_steps,
                [100 * e for e in r.val_error],
                color=colour,
                lw=2.4,
                marker="o" if len(r.val_steps) < 30 else None,
                label=f"{label} val",
            )
        ax.set_title(f"{family} nets")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_gradients(curves: dict[str, list[BlockStats]], path: Path, title: str) -> Path:
    """Left: RMS of ``dL/dx`` at each block input through depth (log scale), one line per
    model. Right: for residual models, the shortcut term and the branch term of that
    gradient (``dL/dy`` and ``dL/dy . dF/dx``)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    for label, stats in curves.items():
        idx = [s.index + 1 for s in stats]
        style = "--" if all(s.shortcut_kind == "none" for s in stats) else "-"
        axes[0].semilogy(idx, [s.grad_x_rms for s in stats], style, marker=".", label=label)
        if style == "-":
            line = axes[1].semilogy(
                idx,
                [s.shortcut_rms for s in stats],
                "-",
                marker=".",
                label=f"{label}: shortcut dL/dy",
            )
            axes[1].semilogy(
                idx,
                [s.branch_rms for s in stats],
                ":",
                marker="x",
                color=line[0].get_color(),
                label=f"{label}: branch dL/dy.dF/dx",
            )
    axes[0].set_title("gradient reaching each block input (RMS of dL/dx)")
    axes[1].set_title("residual blocks: dL/dx = shortcut + branch")
    for ax in axes:
        ax.set_xlabel("block (input side -> output side)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("RMS gradient (log scale)")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
