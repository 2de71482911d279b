"""Segmentation data sources and the dataset that checks and transforms them.

``open_source(path, split)`` recognises three layouts from what is on disk:

- folder: ``DIR/images/*`` and ``DIR/masks/*``, pairs matched by file stem;
- VOC:    ``DIR/JPEGImages``, ``DIR/SegmentationClass``, ``DIR/ImageSets/Segmentation/<split>.txt``;
- COCO:   ``DIR/annotations.json`` (or a ``.json`` path) + ``DIR/images/``; polygons and RLE
          are rendered with pycocotools, category ids mapped to labels 1..K (0 = background,
          crowd regions = ignore_index, larger objects drawn first so small ones stay visible).

With no path, the synthetic shapes set (``tasks.shapes``) is used. A source yields
``(image uint8 [H, W, 3], mask int64 [H, W], where)``; ``where`` names the files for errors.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.images import is_image_file, read_image_rgb
from tasks.segment.augment import mask_dtype
from tasks.segment.masks import check_mask, read_mask
from tasks.shapes import SHAPE_CLASSES, make_shapes_sample, semantic_mask

Sample = tuple[np.ndarray, np.ndarray, str]


class PairSource:
    """(image path, mask path) pairs: the folder and VOC layouts."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], palette: Sequence | None = None):
        self.pairs = list(pairs)
        self.palette = palette
        self.class_names: list[str] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def load_mask(self, i: int) -> np.ndarray:
        return read_mask(self.pairs[i][1], self.palette)

    def load(self, i: int) -> Sample:
        image_path, mask_path = self.pairs[i]
        where = f"image {str(image_path)!r} / mask {str(mask_path)!r}"
        return read_image_rgb(image_path), self.load_mask(i), where


class CocoSource:
    """COCO instance annotations rendered to semantic masks (see the module docstring)."""

    def __init__(self, json_path: Path, image_dir: Path, ignore_index: int) -> None:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(json_path))
        self.json_path, self.image_dir, self.ignore_index = json_path, image_dir, ignore_index
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.class_names = ["background", *(c["name"] for c in cats)]
        self.ids = sorted(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.ids)

    def load_mask(self, i: int) -> np.ndarray:
        info = self.coco.loadImgs(self.ids[i])[0]
        mask = np.zeros((info["height"], info["width"]), dtype=np.int64)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"]))
        anns.sort(key=lambda a: (not a.get("iscrowd", 0), -a.get("area", 0)))
        for ann in anns:
            value = (
                self.ignore_index if ann.get("iscrowd", 0) else self.label_of[ann["category_id"]]
            )
            mask[self.coco.annToMask(ann) > 0] = value
        return mask

    def load(self, i: int) -> Sample:
        info = self.coco.loadImgs(self.ids[i])[0]
        image_path = self.image_dir / info["file_name"]
        where = f"image {str(image_path)!r} (annotations {str(self.json_path)!r})"
        return read_image_rgb(image_path), self.load_mask(i), where


class ShapesSource:
    """``length`` synthetic shapes images of ``size`` pixels from the stream ``seed``."""

    def __init__(self, length: int, *, seed: int, size: int) -> None:
        self.length, self.seed, self.size = length, seed, size
        self.class_names = ["background", *SHAPE_CLASSES]

    def __len__(self) -> int:
        return self.length

    def load_mask(self, i: int) -> np.ndarray:
        return self.load(i)[1]

    def load(self, i: int) -> Sample:
        sample = make_shapes_sample(i, seed=self.seed, size=self.size)
        return sample.image, semantic_mask(sample).astype(np.int64), f"shapes #{i}"


class SubsetSource:
    """A fixed selection of another source's items (the held-out validation split)."""

    def __init__(self, source, indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)
        self.class_names = source.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def load_mask(self, i: int) -> np.ndarray:
        return self.source.load_mask(self.indices[i])

    def load(self, i: int) -> Sample:
        return self.source.load(self.indices[i])


def folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``root/images`` x ``root/masks`` matched by stem; an image without a mask is an error."""
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if is_image_file(p)}
    images = [p for p in sorted((root / "images").iterdir()) if is_image_file(p)]
    if not images:
        raise FileNotFoundError(f"no image files in {str(root / 'images')!r}")
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {str(root / 'images')!r} have no mask with the same "
            f"stem in {str(root / 'masks')!r}: {missing[:5]}; add the masks or remove the images"
        )
    return [(p, masks[p.stem]) for p in images]


def voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """The pairs listed in ``root/ImageSets/Segmentation/<split>.txt``."""
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"VOC split file {str(listing)!r} does not exist")
    names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    pairs = [
        (root / "JPEGImages" / f"{n}.jpg", root / "SegmentationClass" / f"{n}.png") for n in names
    ]
    missing = [str(m) for _, m in pairs if not m.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {str(listing)!r} have no mask: {missing[:5]}"
        )
    return pairs


def layout_of(path: Path) -> str:
    """ "coco", "voc" or "folder" from what is on disk; anything else is an error."""
    if path.suffix == ".json" or (path / "annotations.json").is_file():
        return "coco"
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    raise FileNotFoundError(
        f"data path {str(path)!r} is not a segmentation data set; expected one of: "
        "DIR/images + DIR/masks (folder), DIR/JPEGImages + DIR/SegmentationClass + "
        "DIR/ImageSets/Segmentation (VOC), DIR/annotations.json + DIR/images (COCO)"
    )


def open_source(path: str, split: str, *, ignore_index: int, palette: Sequence | None = None):
    """The source for ``path`` (``split`` picks the VOC list: "train" or "val")."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data path {str(root)!r} does not exist")
    layout = layout_of(root)
    if layout == "coco":
        json_path = root if root.suffix == ".json" else root / "annotations.json"
        image_dir = json_path.parent / "images"
        return CocoSource(
            json_path, image_dir if image_dir.is_dir() else json_path.parent, ignore_index
        )
    pairs = voc_pairs(root, split) if layout == "voc" else folder_pairs(root)
    return PairSource(pairs, palette)


def infer_num_classes(sources: Sequence, ignore_index: int) -> int:
    """1 + the largest non-void label over every mask of ``sources`` (reads each mask once)."""
    top = 0
    for source in sources:
        for i in range(len(source)):
            mask = source.load_mask(i)
            valid = mask[mask != ignore_index]
            if valid.size:
                top = max(top, int(valid.max()))
    return top + 1


class SegmentationDataset(Dataset):
    """Checked, transformed samples: ``(image Tensor[3, H, W] float, mask LongTensor[H, W])``.

    transform: ``(image uint8 [H, W, 3], mask [H, W]) -> (image Tensor[3, H, W], mask
    LongTensor[H, W])`` (see ``tasks.segment.augment``). ``raw(i)`` gives the checked arrays
    before any transform (for drawing).
    in_memory: decode and check every pair once, when the data set is built, and keep it
    (image uint8, mask in the smallest dtype that holds the labels), so no epoch decodes
    JPEG/PNG or renders COCO again, a bad file stops the run before training starts, and
    DataLoader workers (forked after this) share the filled cache. Costs about H * W * 4 bytes
    per sample.
    """

    def __init__(
        self,
        source,
        *,
        num_classes: int,
        ignore_index: int,
        transform: Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]],
        in_memory: bool = False,
    ) -> None:
        self.source, self.transform = source, transform
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if in_memory:
            small = mask_dtype(ignore_index, num_classes)
            pairs = (self._load(i) for i in range(len(source)))
            self._cache = [(image, mask.astype(small)) for image, mask in pairs]

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask, where = self.source.load(i)
        check_mask(
            mask, image, num_classes=self.num_classes, ignore_index=self.ignore_index, where=where
        )
        return image, mask

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self._cache[i] if self._cache is not None else self._load(i)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(*self.raw(i))


def pad_collate(
    samples: Sequence[tuple[Tensor, Tensor]], ignore_index: int
) -> tuple[Tensor, Tensor]:
    """Stacks samples of different sizes by padding right/bottom to the largest: images with 0
    (the mean colour after normalisation), masks with ``ignore_index`` so padding is never
    scored. -> (Tensor[B, 3, H, W], LongTensor[B, H, W])."""
    height = max(img.shape[-2] for img, _ in samples)
    width = max(img.shape[-1] for img, _ in samples)
    images = torch.zeros(len(samples), samples[0][0].shape[0], height, width)
    masks = torch.full((len(samples), height, width), ignore_index, dtype=torch.long)
    for k, (img, mask) in enumerate(samples):
        images[k, :, : img.shape[-2], : img.shape[-1]] = img
        masks[k, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks
