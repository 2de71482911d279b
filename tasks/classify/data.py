"""Classification data: ImageFolder trees decoded once into memory, and a synthetic set.

Small data sets (CIFAR-10 is 150 MB as uint8) are decoded ONCE, in parallel threads (PIL
releases the GIL while decoding), resized to ``image_size`` and held as one
``uint8 [N, 3, S, S]`` tensor; augmentation then runs on whole batches (``augment.py``).
The decoded tensor is cached on disk keyed by the files' paths, sizes and mtimes, so a second
run starts in a second instead of a minute.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from tasks.config import ConfigError
from tasks.images import (
    DataError,
    ImageDecodeError,
    is_hidden,
    is_image_file,
    read_image_rgb,
    walk,
)

CACHE_VERSION = 1


@dataclass
class FolderListing:
    """paths[i] is an image of class ``class_names[labels[i]]``."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str]


# folder names of data splits: a root holding these is a data set, not an ImageFolder
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


def scan_image_folder(root: str | os.PathLike, *, field: str = "data.train") -> FolderListing:
    """List ``root/<class>/<image>`` files, classes in sorted (stable) name order.

    Raises FileNotFoundError for a missing root and ValueError for a root without class
    folders or a class folder without images; the message names the path and ``field``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{field}={str(root)!r}: folder does not exist (expected an ImageFolder root "
            "with one sub-folder of images per class)"
        )
    # sorted by the NFC name (see the return): "café" written decomposed on macOS (e +
    # combining accent) must sort where the composed spelling does, or one data set would
    # number its classes two ways depending on the disk it was copied to
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not is_hidden(d, root)),
        key=lambda d: (unicodedata.normalize("NFC", d.name), d.name),
    )
    if not class_dirs:
        raise DataError(
            f"{field}={str(root)!r} has no class sub-folders (expected "
            f"{root}/<class_name>/<image>.jpg)"
        )
    names = [d.name for d in class_dirs]
    if all(n.lower() in SPLIT_NAMES for n in names) and any(
        sub.is_dir() for d in class_dirs for sub in d.iterdir()
    ):  # a data set's root: training would learn "train vs val", not its classes
        wanted = "train" if "train" in field else "val"
        split = next((d for d in class_dirs if d.name.lower().startswith(wanted)), class_dirs[0])
        raise DataError(
            f"{field}={str(root)!r}: its sub-folders {names} are data splits holding class "
            f"folders (expected {root}/<class_name>/<image>.jpg); point {field} at "
            f"{str(split)!r}"
        )
    nfc = [unicodedata.normalize("NFC", n) for n in names]
    for i in range(1, len(nfc)):  # sorted by it: the two spellings sit side by side
        if nfc[i] == nfc[i - 1]:
            raise DataError(
                f"{field}={str(root)!r}: class folders {names[i - 1]!r} and {names[i]!r} spell "
                f"one name {nfc[i]!r} in two Unicode forms (composed and decomposed accents); "
                "expected one folder per class (merge them)"
            )
    loose = [p.name for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if loose:
        print(f"note: {field}: {len(loose)} image(s) beside the class folders are not used")
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        named = [p for p in walk(class_dir) if is_image_file(p) and not is_hidden(p, class_dir)]
        files = sorted(p for p in named if p.is_file())
        if len(files) < len(named):  # broken links, folders named like images
            odd = sorted(str(p) for p in set(named) - set(files))
            print(f"note: {field}: {len(odd)} path(s) named like images are not files, not "
                  f"used: {odd[:3]}{' ...' if len(odd) > 3 else ''}")  # fmt: skip
        if not files:
            raise DataError(
                f"{field}: class folder {str(class_dir)!r} contains no images (expected files "
                f"ending in .jpg/.png/...); remove the folder or add images"
            )
        paths += files
        labels += [label] * len(files)
    # NFC: macOS writes "café" decomposed (e + combining accent); a val folder made elsewhere
    # spells it composed, and the names must match (they look identical in any message)
    return FolderListing(paths, labels, nfc)


def _cache_key(paths: list[Path], size: int, skip_bad: bool) -> str:
    digest = hashlib.sha1(f"v{CACHE_VERSION} size={size} skip_bad={skip_bad}".encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_images(
    paths: list[Path],
    size: int,
    *,
    skip_bad: bool = False,
    workers: int = 0,
    cache_dir: str = "",
) -> tuple[Tensor, Tensor]:
    """Decode ``paths`` to ``(images uint8 [M, 3, size, size], kept int64 [M])``.

    ``kept`` indexes ``paths``: with ``skip_bad`` unreadable files are left out (and counted
    by the caller as ``len(paths) - M``); without it the first bad file raises
    ImageDecodeError naming it. ``cache_dir`` ("" = off) stores the result keyed by the
    files' paths, sizes and mtimes.
    """
    cache_file = None
    if cache_dir and paths:
        key = _cache_key(paths, size, skip_bad)
        cache_file = Path(cache_dir).expanduser() / f"images-{key}.pt"
        if cache_file.is_file():
            try:
                cached = torch.load(cache_file, weights_only=True)
                return cached["images"], cached["kept"]
            except Exception as err:  # noqa: BLE001 - a damaged cache is rebuilt, whatever broke
                print(f"note: cache file {str(cache_file)!r} is unreadable ({err}); rebuilding")

    def load(path: Path) -> np.ndarray | None:
        try:
            return read_image_rgb(path, size)
        except ImageDecodeError as err:
            if skip_bad:
                return None
            raise ImageDecodeError(f"{err}; or set data.skip_bad=true to skip such files") from None

    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    images = torch.empty((len(paths), size, size, 3), dtype=torch.uint8)
    kept: list[int] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(pool.map(load, paths, chunksize=64)):
            if arr is not None:
                images[len(kept)] = torch.from_numpy(arr)
                kept.append(i)
    images = images[: len(kept)].permute(0, 3, 1, 2).contiguous()
    kept_t = torch.tensor(kept, dtype=torch.int64)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")  # torchrun ranks write at once
        torch.save({"images": images, "kept": kept_t}, tmp)
        tmp.replace(cache_file)  # atomic: a crashed run never leaves half a cache file
    return images, kept_t


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded per-class hold-out: ``(train_idx, val_idx)``, each sorted.

    Each class gives ``round(fraction * n_class)`` images, at least one and always leaving
    one to train on when it has two or more, so the same labels, fraction and seed always
    give the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction={fraction}: expected a fraction in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    val_parts = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        n_val = round(fraction * len(idx))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val_parts.append(idx[torch.randperm(len(idx), generator=gen)[:n_val]])
    val_idx = torch.sort(torch.cat(val_parts)).values if val_parts else labels[:0]
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


class InMemoryImages(TensorDataset):
    """``images uint8 [N, 3, H, W]`` and ``labels int64 [N]``; items are ``(image, label)``.

    A ``TensorDataset``, so the engine batches it by fancy indexing (no per-sample collate).
    """

    def __init__(self, images: Tensor, labels: Tensor, class_names: list[str]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(images, labels)
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.skipped: list[Path] = []  # unreadable files left out with data.skip_bad=true

    def subset(self, idx: Tensor) -> InMemoryImages:
        return InMemoryImages(self.images[idx], self.labels[idx], self.class_names)


def load_image_folder(
    root: str | os.PathLike,
    size: int,
    *,
    field: str = "data.train",
    skip_bad: bool = False,
    workers: int = 0,
    cache_dir: str = "",
) -> InMemoryImages:
    """Scan and decode one ImageFolder root into memory (see ``decode_images``)."""
    listing = scan_image_folder(root, field=field)
    images, kept = decode_images(
        listing.paths, size, skip_bad=skip_bad, workers=workers, cache_dir=cache_dir
    )
    labels = torch.tensor(listing.labels, dtype=torch.int64)[kept]
    ds = InMemoryImages(images, labels, listing.class_names)
    kept_set = set(kept.tolist())
    ds.skipped = [p for i, p in enumerate(listing.paths) if i not in kept_set]
    return ds


def synthetic_images(
    num_classes: int, per_class: int, size: int, seed: int
) -> tuple[Tensor, Tensor]:
    """A deterministic toy set: ``(uint8 [num_classes*per_class, 3, size, size], int64 labels)``.

    Class ``c`` is a stripe pattern with its own colour pair, angle and frequency, randomly
    shifted, scaled in contrast and noised per image: learnable in seconds, not trivially
    (a linear model on mean colour alone does not solve it).
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_classes * per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    cls_gen = torch.Generator().manual_seed(1234)  # class identities fixed across seeds
    colours = torch.rand(num_classes, 2, 3, generator=cls_gen) * 0.8 + 0.1
    angle = torch.arange(num_classes) * (torch.pi / num_classes)
    freq = 2.0 + (torch.arange(num_classes) % 3).float()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a = angle[labels] + 0.15 * torch.randn(n, generator=gen)
    phase = torch.rand(n, generator=gen) * 2 * torch.pi
    proj = torch.cos(a)[:, None, None] * xx + torch.sin(a)[:, None, None] * yy
    wave = torch.sin(freq[labels][:, None, None] * torch.pi * proj + phase[:, None, None])
    mix = (0.5 + 0.5 * wave)[:, None]  # [n, 1, S, S]
    c0, c1 = colours[labels, 0][..., None, None], colours[labels, 1][..., None, None]
    img = c0 * mix + c1 * (1 - mix)
    img = img * (0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen))
    img = img + 0.08 * torch.randn(img.shape, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels
