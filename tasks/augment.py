"""Albumentations pipelines that draw from torch's random state.

albumentations 2 keeps its own generators: no global seed reaches them (``train.seed`` would
not make augmentation repeatable), and every DataLoader worker gets an identical copy (each
worker would make the same crops). ``seeded`` reseeds the pipeline from torch's generator
before each sample: the engine seeds that generator, DataLoader seeds it per worker, and
``--resume`` restores it.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import torch


def seeded(pipeline: A.Compose, **data: Any) -> dict[str, Any]:
    """``pipeline(**data)`` with a seed drawn from torch's current random state."""
    pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    return pipeline(**data)
