"""What every head returns, in train and eval mode alike.

A head takes a backbone's features (``Mapping[str, Tensor]``), never the backbone itself, so
one backbone can feed several heads at once (joint detection + segmentation later).
Returning predictions and losses together in both modes means validation loss needs no
mode-switching hack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class HeadOutput:
    """preds:  task-specific predictions (logits Tensor[B, K]; list of per-image dicts of
               ``boxes`` FloatTensor[N, 4] x1y1x2y2 in input pixels, ``scores``, ``labels``;
               segmentation logits Tensor[B, K, H, W]).
    losses:    named scalar losses; empty when no targets were given. The engine sums them.
    """

    preds: Any
    losses: dict[str, Tensor] = field(default_factory=dict)
