"""Where the gradient of a residual block goes: ``dL/dx = dL/dy * (1 + dF/dx)`` measured.

Every block of ``backbones.blocks`` computes ``y = act(F(x) + S(x))`` through one method,
``add_shortcut(F(x), x)``, which first passes ``F(x)`` through the block's ``drop_path``
module. Forward hooks on that module (the branch output ``F(x)``, as added) and on
``downsample`` (a projection ``S(x)``) capture the tensors; ``torch.autograd.grad`` then
splits the gradient reaching the block input ``x``::

    g        = dL/d(F(x) + S(x))     the gradient at the pre-activation sum (for post-activation
                                     blocks it already carries the mask relu'(y) of the ReLU
                                     after the addition; pre-activation blocks have no ReLU there)
    shortcut = g                     identity shortcut: the "1" of 1 + dF/dx
             = g . dS/dx             projection / zero-pad shortcut (vector-Jacobian product)
    branch   = g . dF/dx             vector-Jacobian product through the residual branch
    dL/dx    = shortcut + branch (+ other: paths that leave the block chain, e.g. an FPN
                                  reading a stage output; zero for a classifier)

Plain blocks (``residual=False``) have no shortcut: ``dL/dx = branch``.

Statistics are root-mean-square values (``||t|| / sqrt(numel)``) so that stages of different
resolution compare on one axis. Measurements run in training mode (BatchNorm with batch
statistics, as SGD sees the net) on a deep copy, so the caller's model and its running
statistics are untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified name, block)]`` of every ``backbones.blocks`` block, in forward order.

    A block is recognised by its ``add_shortcut`` method and ``drop_path`` module (the shared
    base of ``BasicBlock``, ``Bottleneck`` and ``PreActBasicBlock``). Raises ValueError for a
    model without such blocks (``timm:`` backbones, for example).
    """
    found = [
        (name, m)
        for name, m in model.named_modules()
        if hasattr(m, "add_shortcut") and isinstance(getattr(m, "drop_path", None), nn.Module)
    ]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no resvision residual blocks (modules with "
            "add_shortcut/drop_path from backbones/blocks.py); the residual tools measure "
            "resvision ResNets only, not timm: backbones"
        )
    return found


def stage_of(block_name: str) -> str:
    """``"backbone.layer2.3"`` -> ``"layer2"`` (the ``layerK`` part of a block's name)."""
    parts = [p for p in block_name.split(".") if p.startswith("layer")]
    return parts[-1] if parts else block_name.rsplit(".", 1)[0]


def rms(t: Tensor) -> float:
    """Root mean square of all entries."""
    return float(t.detach().float().pow(2).mean().sqrt())


@dataclass
class BlockSplit:
    """Gradient tensors of one block (all shaped like the block input ``x``)."""

    name: str
    residual: bool
    shortcut_kind: str  # "identity", "projection" or "none" (plain block)
    grad_x: Tensor  # dL/dx as autograd computes it
    branch: Tensor  # g . dF/dx
    shortcut: Tensor  # g, g . dS/dx, or zeros
    grad_sum: Tensor  # g = dL/d(F(x) + S(x)), shaped like the block output
    forward_ratio: float  # ||F(x)|| / ||S(x)|| (nan for a plain block)
    weight_grad_norm: float  # L2 norm of dL/dtheta over the block's parameters


class _Capture:
    """Forward hooks that record ``x``, ``F(x)`` and ``S(x)`` of every block."""

    def __init__(self, blocks: list[tuple[str, nn.Module]]) -> None:
        self.x: dict[str, Tensor] = {}
        self.branch: dict[str, Tensor] = {}
        self.shortcut: dict[str, Tensor] = {}
        self.handles = []
        for name, block in blocks:
            self.handles.append(block.register_forward_pre_hook(self._store(self.x, name, 0)))
            self.handles.append(block.drop_path.register_forward_hook(self._branch(name)))
            if block.downsample is not None:
                self.handles.append(
                    block.downsample.register_forward_hook(self._store(self.shortcut, name, 1))
                )

    @staticmethod
    def _store(into: dict[str, Tensor], name: str, which: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor | None = None) -> None:
            into[name] = inputs[0] if which == 0 else output

        return hook

    def _branch(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            self.branch[name] = output
            # a plain block applies its in-place ReLU straight to F(x): hand it a copy so the
            # recorded tensor stays F(x) and autograd can still differentiate it
            return output.clone()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def split_gradients(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> list[BlockSplit]:
    """Run ``loss_fn(model)`` once with hooks and split every block's ``dL/dx``.

    loss_fn: takes the model, returns a scalar loss (it runs the forward pass). The model is
    used as given (mode included); ``measure`` wraps this with a deep copy in training mode.
    """
    blocks = residual_blocks(model)
    capture = _Capture(blocks)
    try:
        loss = loss_fn(model)
    finally:
        capture.remove()
    names = [n for n, _ in blocks if n in capture.branch]
    if not names:
        raise ValueError("loss_fn ran no residual block (does it call the model?)")
    by_name = dict(blocks)
    params = [[p for p in by_name[n].parameters() if p.requires_grad] for n in names]
    flat = [p for ps in params for p in ps]
    xs = [capture.x[n] for n in names]
    bs = [capture.branch[n] for n in names]
    grads = torch.autograd.grad(loss, xs + bs + flat, retain_graph=True, allow_unused=True)
    gx, gb, gp = grads[: len(xs)], grads[len(xs) : 2 * len(xs)], grads[2 * len(xs) :]
    out, k = [], 0
    for i, name in enumerate(names):
        block, x, b = by_name[name], xs[i], bs[i]
        g = gb[i] if gb[i] is not None else torch.zeros_like(b)
        (branch,) = torch.autograd.grad(b, x, g, retain_graph=True, allow_unused=True)
        branch = torch.zeros_like(x) if branch is None else branch
        if not block.residual:
            kind, shortcut, ratio = "none", torch.zeros_like(x), math.nan
        elif block.downsample is None:
            kind, shortcut, ratio = "identity", g, _ratio(b, x)
        else:
            s = capture.shortcut[name]
            (shortcut,) = torch.autograd.grad(s, x, g, retain_graph=True)
            kind, ratio = "projection", _ratio(b, s)
        pg = [t for t in gp[k : k + len(params[i])] if t is not None]
        k += len(params[i])
        wnorm = float(torch.sqrt(sum(t.float().pow(2).sum() for t in pg))) if pg else 0.0
        grad_x = gx[i] if gx[i] is not None else torch.zeros_like(x)
        out.append(
            BlockSplit(name, block.residual, kind, grad_x, branch, shortcut, g, ratio, wnorm)
        )
    return out


def _ratio(branch: Tensor, shortcut: Tensor) -> float:
    return float(branch.detach().float().norm() / shortcut.detach().float().norm().clamp_min(1e-12))


@dataclass
class BlockStats:
    """One row of the gradient report (plain floats; see the module docstring)."""

    index: int
    name: str
    stage: str
    shortcut_kind: str
    grad_x_rms: float  # RMS of dL/dx at the block input
    branch_rms: float  # RMS of g . dF/dx
    shortcut_rms: float  # RMS of the shortcut term
    other_rms: float  # RMS of dL/dx - branch - shortcut (0 for a classifier)
    grad_sum_rms: float  # RMS of g = dL/d(F(x) + S(x))
    forward_ratio: float  # ||F(x)|| / ||S(x)||
    weight_grad_norm: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(splits: list[BlockSplit]) -> list[BlockStats]:
    """Per-block RMS statistics of ``split_gradients``' tensors."""
    return [
        BlockStats(
            i,
            s.name,
            stage_of(s.name),
            s.shortcut_kind,
            rms(s.grad_x),
            rms(s.branch),
            rms(s.shortcut),
            rms(s.grad_x - s.branch - s.shortcut),
            rms(s.grad_sum),
            s.forward_ratio,
            s.weight_grad_norm,
        )  # fmt: skip
        for i, s in enumerate(splits)
    ]


def measure(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> list[BlockStats]:
    """``summarise(split_gradients(...))`` on a deep copy of ``model`` in training mode."""
    probe = copy.deepcopy(model).train()
    return summarise(split_gradients(probe, loss_fn))


class ProbeClassifier(nn.Module):
    """A bare backbone plus global average pooling and a seeded linear layer, so a backbone
    name alone gives a loss: ``forward(x[B, 3, H, W]) -> logits[B, num_classes]``."""

    def __init__(self, backbone: nn.Module, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info[-1].channels
        gen = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(channels, num_classes)
        with torch.no_grad():
            bound = 1 / math.sqrt(channels)
            self.fc.weight.copy_(
                torch.rand(self.fc.weight.shape, generator=gen) * 2 * bound - bound
            )
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        last = list(self.backbone(x).values())[-1]
        return self.fc(last.mean((2, 3)))


def random_batch(
    batch: int = 4, size: int = 32, num_classes: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A seeded ``(x[B, 3, size, size] ~ N(0, 1), labels[B])`` batch (CIFAR-sized by default)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=gen)
    return x, torch.randint(0, num_classes, (batch,), generator=gen)


def cross_entropy_loss(x: Tensor, labels: Tensor) -> Callable[[nn.Module], Tensor]:
    """``loss_fn`` for ``measure``: cross-entropy of ``model(x)`` (a logits tensor)."""
    return lambda model: F.cross_entropy(model(x), labels)
