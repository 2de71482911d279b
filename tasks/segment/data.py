"""Segmentation data sources and the dataset that checks and transforms them.

``open_source(path, split)`` recognises three layouts from what is on disk:

- folder: ``DIR/images/*`` and ``DIR/masks/*``, pairs matched by file stem;
- VOC:    ``DIR/JPEGImages``, ``DIR/SegmentationClass``, ``DIR/ImageSets/Segmentation/<split>.txt``
          (no ``val.txt`` and no ``data.val``: a hold-out of the train list, as for folders);
- COCO:   ``DIR/annotations.json`` (or the other names ``tasks.coco`` knows) or a ``.json`` path,
          images in ``DIR/images/`` (``tasks.coco``); polygons and RLE are rendered with
          pycocotools, category ids mapped to labels 1..K (0 = background, crowd regions =
          ignore_index, larger shapes drawn first so small ones stay visible).

With no path, the synthetic shapes set (``tasks.shapes``) is used. A source yields
``(image uint8 [H, W, 3], mask int64 [H, W], where)``; ``where`` names the files for errors;
``image_size(i)`` is item i's (H, W) as decoded, from a header or the annotations (no pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.coco import LAYOUTS as COCO_LAYOUTS
from tasks.coco import annotation_refs, crowd_flag, entry_float, find_coco_json, read_coco
from tasks.data import read_name_list
from tasks.images import DataError, displayed_size, image_files, read_image_rgb
from tasks.segment.augment import mask_dtype
from tasks.segment.masks import check_mask, read_mask
from tasks.shapes import SHAPE_CLASSES, make_shapes_sample, semantic_mask

Sample = tuple[np.ndarray, np.ndarray, str]


class PairSource:
    """(image path, mask path) pairs: the folder and VOC layouts. ``mask_options`` are
    ``read_mask``'s keyword arguments (palette, values, ignore_index)."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], **mask_options: Any) -> None:
        self.pairs = list(pairs)
        self.mask_options = mask_options
        self.class_names: list[str] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def load_mask(self, i: int) -> np.ndarray:
        return read_mask(self.pairs[i][1], **self.mask_options)

    def image_size(self, i: int) -> tuple[int, int]:
        width, height = displayed_size(self.pairs[i][0])  # EXIF turns applied, as decoded
        return height, width

    def load(self, i: int) -> Sample:
        image_path, mask_path = self.pairs[i]
        where = f"image {str(image_path)!r} / mask {str(mask_path)!r}"
        return read_image_rgb(image_path), self.load_mask(i), where


class CocoSource:
    """COCO instance annotations rendered to semantic masks (see the module docstring).

    Every annotation is checked when the source is opened (its image, category, and a polygon
    or RLE that fits the image), so a bad entry stops the run before training, by name.
    class_names: the training set's classes, for a validation file: its categories are then
    matched by name (another file numbers them its own way, or lists fewer); None = this
    file's categories, sorted by id. A category named "background" is label 0.
    """

    def __init__(
        self, json_path: Path, root: Path, ignore_index: int, class_names: list[str] | None
    ) -> None:
        src = str(json_path)
        cats, self.images, annotations = read_coco(json_path, root)
        own = [name for _, name in sorted(cats.items()) if not _is_background(name)]
        self.class_names = list(class_names or ["background", *own])
        # None: a category the training classes lack, an error only where an annotation uses
        # it (CVAT and Label Studio list every label of the project in each file)
        label_of: dict[int, int | None] = {}
        for cat_id, name in cats.items():
            known = name in self.class_names
            label_of[cat_id] = (
                0 if _is_background(name) else (self.class_names.index(name) if known else None)
            )
        # per image: (segmentation, label or ignore_index), in file order
        self.shapes: dict[int, list[tuple[Any, int]]] = {k: [] for k in self.images}
        for i, ann in enumerate(annotations):
            where = f"{src} annotations[{i}]"
            image_id, cat = annotation_refs(ann, where, self.images, label_of)
            if label_of[cat] is None:
                raise DataError(
                    f"{where}: category {cats[cat]!r} (id {cat}) is not one of the training "
                    f"classes {self.class_names[1:]} (expected the same category names)"
                )
            crowd = crowd_flag(ann, where)
            image = self.images[image_id]
            _check_geometry(ann.get("segmentation"), image.height, image.width, where, ann)
            label = ignore_index if crowd else label_of[cat]
            if ann.get("area") is not None:  # a broken file is named, though drawing uses its own
                entry_float(ann, "area", where)
            self.shapes[image_id].append((ann["segmentation"], label))
        self.json_path = json_path
        self.ids = sorted(self.images)

    def __len__(self) -> int:
        return len(self.ids)

    def image_size(self, i: int) -> tuple[int, int]:
        image = self.images[self.ids[i]]
        return image.height, image.width

    def load_mask(self, i: int) -> np.ndarray:
        """int64 [H, W]: every shape, crowd regions (void) included, drawn from the largest
        rendered area to the smallest, so small objects drawn over large ones stay visible and
        a crowd region stays void inside a larger object around it (a crowd of donuts on a
        table is not table). The area is the rendered mask's (``pycocotools.mask.area``), not
        the file's ``area``, which exporters leave out or fill with the box's."""
        from pycocotools import mask as mask_utils

        image = self.images[self.ids[i]]
        h, w = image.height, image.width
        mask = np.zeros((h, w), dtype=np.int64)
        rendered = []
        for seg, label in self.shapes[self.ids[i]]:
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            rendered.append((float(mask_utils.area(rle)), label, rle))
        for _, label, rle in sorted(rendered, key=lambda r: -r[0]):  # stable: file order on ties
            mask[mask_utils.decode(rle) > 0] = label
        return mask

    def load(self, i: int) -> Sample:
        image_path = self.images[self.ids[i]].path
        where = f"image {str(image_path)!r} (annotations {str(self.json_path)!r})"
        return read_image_rgb(image_path), self.load_mask(i), where


def _is_background(name: str) -> bool:
    return name.strip().lower() in ("background", "_background_", "__background__")


def _check_geometry(seg: Any, height: int, width: int, where: str, ann: dict) -> None:
    """An annotation's segmentation can be rendered: a polygon list (3+ points each) or an
    RLE of its image's size. Raises DataError naming ``where``."""
    if not seg:
        raise DataError(
            f"{where} (id {ann.get('id', '?')}): no 'segmentation' polygon or RLE (a box-only "
            "COCO file is detection data: --task detect)"
        )
    if isinstance(seg, dict):
        size = seg.get("size")
        if "counts" not in seg or list(size or []) != [height, width]:
            raise DataError(
                f"{where}: RLE size {size} does not match its image's [height, width] = "
                f"{[height, width]} (expected an RLE with 'counts' and that size)"
            )
        runs = _rle_runs(seg["counts"])
        whole = runs is not None and all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 and r % 1 == 0
            for r in runs
        )
        total = sum(runs) if whole else None
        if total != height * width:  # pycocotools would read past the runs, or fail in a worker
            found = f"add up to {total}" if whole else "are not whole numbers >= 0"
            raise DataError(
                f"{where}: RLE counts {str(seg['counts'])[:40]!r} {found}; expected run "
                f"lengths adding up to height x width = {height * width}"
            )
        return
    for polygon in seg if isinstance(seg, list) else [None]:
        numeric = isinstance(polygon, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon
        )
        if not numeric or len(polygon) < 6 or len(polygon) % 2:
            raise DataError(
                f"{where}: segmentation polygon {str(polygon)[:60]} is not a list of 3 or more "
                "x, y points (expected [[x1, y1, x2, y2, x3, y3, ...], ...] or an RLE)"
            )


def _rle_runs(counts: Any) -> list | None:
    """The run lengths of an RLE's ``counts``: a list as given; a COCO compressed string
    decoded as pycocotools' ``rleFrString`` does (6-bit characters from '0', 5 bits of value
    each, 0x20 = more follow, 0x10 = negative, from the fourth run on a difference to the run
    two before); None when it is neither or the string ends mid-number."""
    if isinstance(counts, list):
        return counts
    if isinstance(counts, bytes):
        counts = counts.decode("latin-1")
    if not isinstance(counts, str):
        return None
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
        value = shift = 0
    return runs if shift == 0 else None


class ShapesSource:
    """``length`` synthetic shapes images of ``size`` pixels from the stream ``seed``."""

    def __init__(self, length: int, *, seed: int, size: int) -> None:
        self.length, self.seed, self.size = length, seed, size
        self.class_names = ["background", *SHAPE_CLASSES]

    def __len__(self) -> int:
        return self.length

    def load_mask(self, i: int) -> np.ndarray:
        return self.load(i)[1]

    def image_size(self, i: int) -> tuple[int, int]:
        return self.size, self.size

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

    def image_size(self, i: int) -> tuple[int, int]:
        return self.source.image_size(self.indices[i])

    def load(self, i: int) -> Sample:
        return self.source.load(self.indices[i])


# a mask may carry one of these after its image's stem: im0.jpg <- im0_mask.png (Carvana,
# ISIC and many exports name masks so)
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_segmentation")


def _key(path: Path, folder: Path) -> str:
    """What pairs an image with its mask: the path below ``folder`` without the extension
    (``a/b.jpg`` -> ``a/b``; the stem for a file directly inside it)."""
    return path.relative_to(folder).with_suffix("").as_posix()


def folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``root/images`` x ``root/masks`` matched by stem (the mask's stem may add a suffix of
    ``MASK_SUFFIXES``); sub-folders are searched too, an image in ``images/a/`` pairing with a
    mask in ``masks/a/``. An image without a mask is an error, masks without an image are
    counted in a note. Two files of one folder with one stem (``0.jpg``, ``0.png``), or two
    masks that fit one image (``0.png``, ``0_mask.png``), are errors: a pairing would be a
    guess."""
    image_dir, mask_dir = root / "images", root / "masks"
    mask_files = image_files(mask_dir)
    images = image_files(image_dir)
    if not images:
        raise FileNotFoundError(f"no image files in {str(image_dir)!r}")
    for folder, files in ((image_dir, images), (mask_dir, mask_files)):
        _check_unique_stems(files, folder)
    masks = {_key(p, mask_dir): p for p in mask_files}
    pairs, missing = [], []
    for image in images:
        key = _key(image, image_dir)
        found = [masks[key + s] for s in MASK_SUFFIXES if key + s in masks]
        if len(found) > 1:
            raise DataError(
                f"image {str(image)!r} fits several masks {[m.name for m in found]}; expected "
                "one mask per image (remove or rename the others)"
            )
        if found:
            pairs.append((image, found[0]))
        else:
            missing.append(key + image.suffix)
    if missing:
        nested = any("/" in m for m in missing)
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {str(image_dir)!r} have no mask with the same "
            f"stem (or the stem + {', '.join(MASK_SUFFIXES[1:])}) in {str(mask_dir)!r}"
            f"{' (a sub-folder of images pairs with that of masks)' if nested else ''}: "
            f"{missing[:5]}; add the masks or remove the images"
        )
    unused = len(masks) - len({m for _, m in pairs})
    if unused:
        print(f"note: {unused} mask(s) in {str(mask_dir)!r} have no image; not used")
    return pairs


def _check_unique_stems(files: list[Path], folder: Path) -> None:
    """Images and masks are paired by stem: two files with one stem is a DataError."""
    seen: dict[str, Path] = {}
    for path in files:
        other = seen.setdefault(_key(path, folder), path)
        if other != path:
            raise DataError(
                f"{str(other)!r} and {str(path)!r} share the stem {path.stem!r}; images and "
                "masks are paired by stem (expected one file per stem in each folder)"
            )


def voc_split_file(root: Path, split: str) -> Path:
    """``root/ImageSets/Segmentation/<split>.txt``: the VOC list of a split's names."""
    return root / "ImageSets" / "Segmentation" / f"{split}.txt"


def voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """The pairs listed in ``root/ImageSets/Segmentation/<split>.txt``; images by stem with
    any image extension, masks ``<name>.png`` or else by stem (``.PNG``), all checked up
    front."""
    listing = voc_split_file(root, split)
    if not listing.is_file():
        lists = sorted(p.name for p in listing.parent.glob("*.txt"))
        found = f"it holds {', '.join(lists)}" if lists else "it holds no lists"
        raise FileNotFoundError(
            f"VOC split file {str(listing)!r} does not exist ({found}); expected "
            f"{split}.txt naming the {split} images one per line (rename or copy a list to it)"
        )
    names = read_name_list(listing)
    images = {p.stem: p for p in image_files(root / "JPEGImages", recursive=False)}
    masks = {p.stem: p for p in image_files(root / "SegmentationClass", recursive=False)}
    pairs = []
    for n in names:
        mask = root / "SegmentationClass" / f"{n}.png"  # else by stem: .PNG, .bmp, ...
        pairs.append((images.get(n, root / "JPEGImages" / f"{n}.jpg"),
                      mask if mask.is_file() else masks.get(n, mask)))  # fmt: skip
    for kind, k in (("mask", 1), ("image", 0)):
        missing = [str(pair[k]) for pair in pairs if not pair[k].is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} name(s) listed in {str(listing)!r} have no {kind}: {missing[:5]}"
            )
    return pairs


def layout_of(path: Path, split: str = "") -> str:
    """ "coco", "voc" or "folder" from what is on disk; anything else is an error."""
    if path.suffix == ".json" or find_coco_json(path, split) is not None:
        return "coco"
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    raise FileNotFoundError(
        f"data path {str(path)!r} is not a segmentation data set; expected one of: "
        "DIR/images + DIR/masks (folder), DIR/JPEGImages + DIR/SegmentationClass + "
        f"DIR/ImageSets/Segmentation (VOC), DIR/images + {COCO_LAYOUTS} in DIR (COCO)"
        + _layout_hint(path)
    )


def _layout_hint(path: Path) -> str:
    """What an unrecognised folder holds: its sub-folders (``img/`` + ``ann/`` wants
    renaming), or a data set one level down (``DIR/train/images`` + ``DIR/train/masks``)."""
    if not path.is_dir():
        return ""
    subs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = [n for n in subs if (path / n / "images").is_dir() and (path / n / "masks").is_dir()]
    if nested:
        return f"; its sub-folder(s) {nested} are: point data.train / data.val at them"
    if subs:
        return f"; it holds {subs[:8]}: rename the image and mask folders to images/ and masks/"
    return ""


def open_source(
    path: str,
    split: str,
    *,
    ignore_index: int,
    palette: Sequence | None = None,
    mask_values: Sequence[int] | None = None,
    class_names: list[str] | None = None,
):
    """The source for ``path`` (``split`` picks the VOC list: "train" or "val"; ``palette``
    and ``mask_values``: how masks store labels, see ``masks.read_mask``; ``class_names``: the
    training classes a COCO validation file is matched to by name)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data path {str(root)!r} does not exist")
    layout = layout_of(root, split)
    if layout == "coco":
        json_path = root if root.suffix == ".json" else find_coco_json(root, split)
        base = json_path.parent if root.suffix == ".json" else root
        return CocoSource(json_path, base, ignore_index, class_names)
    pairs = voc_pairs(root, split) if layout == "voc" else folder_pairs(root)
    return PairSource(pairs, palette=palette, values=mask_values, ignore_index=ignore_index)


def scan_labels(sources: Sequence, ignore_index: int) -> tuple[list[int], bool]:
    """(sorted labels other than ``ignore_index`` found in every mask of ``sources``, whether
    any pixel is ``ignore_index``); reads each mask once."""
    found: set[int] = set()
    void = False
    for source in sources:
        for i in range(len(source)):
            values = np.unique(source.load_mask(i))
            void = void or bool((values == ignore_index).any())
            found.update(values[values != ignore_index].tolist())
    return sorted(found), void


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

    def image_sizes(self) -> set[tuple[int, int]]:
        """The distinct (H, W) of the images as decoded: from the cache, else from headers or
        annotations (``source.image_size``), never by decoding pixels."""
        if self._cache is not None:
            return {image.shape[:2] for image, _ in self._cache}
        return {tuple(self.source.image_size(i)) for i in range(len(self.source))}

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.raw(i)
        try:
            return self.transform(image, mask)
        except DataError as err:  # the transform knows sizes, not files: name them
            raise DataError(f"{self.source.load(i)[2]}: {err}") from None


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
