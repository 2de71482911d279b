"""Training and validation loaders: resumable mid-epoch, and fast for in-memory tensors.

Every epoch's order is a pure function of ``(seed, epoch)`` (``DistributedSampler``'s
permutation, sharded by rank), so a resumed run skips exactly the batches it has already seen
instead of replaying or re-loading them. Loaders get their own ``torch.Generator``, so creating
an iterator never draws from the global RNG (which would break bit-exact resume).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from tasks.distributed import DistInfo

# Built-in synthetic sets draw their validation split from seed + this offset: a stream no
# training seed reaches, and the same one in every task (detect and segment validate on the
# same shapes images).
SYNTHETIC_VAL_SEED_OFFSET = 1_000_003


def read_name_list(path: Path) -> list[str]:
    """The first word of each non-blank line of a split list (VOC ``ImageSets/*/<split>.txt``:
    ``2007_000032`` or ``2007_000032 -1``); a byte-order mark (Notepad writes one) and CRLF
    line ends are fine."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def worker_error_message(err: BaseException) -> str:
    """What ``err`` says. A DataLoader worker re-raises an error as the same type with the
    worker's traceback in front ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."): of that, only the original error's own message is the user's business."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        name = re.escape(type(err).__name__)
        starts = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, re.MULTILINE))
        if starts:
            return text[starts[-1].end() :].strip()
    return text


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, drop_last) that can start mid-epoch.

    ``set_epoch(epoch, skip=k)`` drops the first ``k`` indices of this rank's order for that
    epoch; ``len`` counts what is left. Works with world size 1 without a process group.
    """

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int) -> None:
        super().__init__(
            dataset,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class TensorBatchLoader:
    """Batches of a ``TensorDataset`` by fancy indexing, no per-sample collate.

    Yields ``[t[idx] for t in dataset.tensors]`` (what ``default_collate`` builds from the same
    samples, at a fraction of the cost). Full batches only.
    """

    def __init__(self, dataset: TensorDataset, sampler: ResumableSampler, batch_size: int):
        self.tensors = dataset.tensors
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield [t[idx] for t in self.tensors]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


def train_loader(
    dataset: Dataset,
    sampler: ResumableSampler,
    *,
    batch_size: int,
    collate: Callable[[Any], Any],
    default_collate: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool,
) -> Any:
    """The loader of one epoch (built after ``sampler.set_epoch``)."""
    if isinstance(dataset, TensorDataset) and default_collate and num_workers == 0:
        return TensorBatchLoader(dataset, sampler, batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def val_loader(
    dataset: Dataset, *, batch_size: int, collate: Callable[[Any], Any], num_workers: int
) -> DataLoader:
    """Every validation sample once, in order (rank 0 evaluates the whole set)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
