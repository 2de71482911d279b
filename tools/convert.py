"""Convert public data sets to the COCO layout every resvision task reads.

    python tools/convert.py pennfudan SRC OUT_DIR [--val-fraction 0.2] [--seed 0]

SRC is the ``PennFudanPed`` tarball (.tar.gz) or its extracted folder (any folder holding
``PNGImages/``, ``PedMasks/``, ``Annotation/``). Writes ``OUT_DIR/train`` and ``OUT_DIR/val``,
each with ``images/`` and ``annotations.json`` (one category ``person``; boxes from the
PASCAL-style text annotations, instance masks from PedMasks as COCO RLE), so
``data.train=OUT_DIR/train data.val=OUT_DIR/val`` works for detection and segmentation.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tasks.checkpoint import atomic_write_text
from tasks.cli import run_tool
from tasks.config import ConfigError
from tasks.images import DataError

BOX_LINE = re.compile(
    r'Bounding box for object (\d+) "[^"]*" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\((-?\d+), (-?\d+)\) - \((-?\d+), (-?\d+)\)"
)


def parse_pennfudan_annotation(path: Path) -> dict[int, list[float]]:
    """``{object number: [x1, y1, x2, y2]}`` (0-based, x2/y2 exclusive) from one text file.

    The files give 1-based inclusive pixel corners: ``(160, 182) - (302, 431)`` is the box
    ``[159, 181, 302, 431]``.
    """
    boxes = {}
    for line in path.read_text(errors="replace").splitlines():
        m = BOX_LINE.search(line)
        if m:
            k, x1, y1, x2, y2 = (int(v) for v in m.groups())
            boxes[k] = [x1 - 1.0, y1 - 1.0, float(x2), float(y2)]
    if not boxes:
        raise DataError(
            f"{path}: no 'Bounding box for object N ... : (Xmin, Ymin) - (Xmax, Ymax)' line "
            "(expected a Penn-Fudan PASCAL-style annotation)"
        )
    return boxes


def _find_root(src: Path, scratch: Path) -> Path:
    """The folder holding PNGImages/, PedMasks/, Annotation/ in ``src`` (a tarball is
    extracted into ``scratch`` first); errors name ``src``, not the scratch folder."""
    if not src.exists():
        raise FileNotFoundError(f"SRC {str(src)!r} does not exist")
    tree = src
    if src.is_file():
        try:
            with tarfile.open(src) as tar:
                tar.extractall(scratch, filter="data")
        except tarfile.TarError:
            raise DataError(
                f"SRC {str(src)!r} is not a readable tar archive (.tar, .tar.gz, .tar.bz2, "
                ".tar.xz); expected the PennFudanPed tarball or its extracted folder"
            ) from None
        tree = scratch
    for candidate in [tree, *sorted(p.parent for p in tree.rglob("PNGImages"))]:
        if all((candidate / d).is_dir() for d in ("PNGImages", "PedMasks", "Annotation")):
            return candidate
    raise FileNotFoundError(
        f"SRC {str(src)!r} holds no folder with PNGImages/, PedMasks/, Annotation/ (expected "
        "the PennFudanPed tarball or its extracted folder)"
    )


def _entries(root: Path, image: Path, image_id: int, ann_id: int) -> tuple[dict, list[dict]]:
    boxes = parse_pennfudan_annotation(root / "Annotation" / f"{image.stem}.txt")
    mask = np.asarray(Image.open(root / "PedMasks" / f"{image.stem}_mask.png"))
    height, width = mask.shape[:2]
    anns = []
    for k, box in sorted(boxes.items()):
        instance = np.asfortranarray((mask == k).astype(np.uint8))
        rle = mask_utils.encode(instance)
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = box
        anns.append(
            dict(
                id=ann_id + len(anns),
                image_id=image_id,
                category_id=1,
                bbox=[x1, y1, x2 - x1, y2 - y1],
                area=float(instance.sum()),
                segmentation=rle,
                iscrowd=0,
            )
        )
    return dict(id=image_id, file_name=image.name, width=width, height=height), anns


def convert_pennfudan(src: Path, out: Path, *, val_fraction: float, seed: int) -> dict[str, int]:
    """Writes ``out/train`` and ``out/val``; returns ``{split: number of images}``. Existing
    non-empty split folders are refused: old images would mix with the new split."""
    for split in ("train", "val"):
        if (out / split).exists() and any((out / split).iterdir()):
            raise ConfigError(
                f"{str(out / split)!r} is not empty; expected a new OUT folder (or remove it)"
            )
    with tempfile.TemporaryDirectory() as scratch:
        root = _find_root(src, Path(scratch))
        images = sorted((root / "PNGImages").glob("*.png"))
        if not images:
            raise FileNotFoundError(f"no PNG images in {str(root / 'PNGImages')!r}")
        order = np.random.default_rng(seed).permutation(len(images))
        n_val = max(1, round(len(images) * val_fraction))
        splits = {"val": sorted(order[:n_val]), "train": sorted(order[n_val:])}
        counts = {}
        for split, indices in splits.items():
            folder = out / split
            (folder / "images").mkdir(parents=True, exist_ok=True)
            coco_images, coco_anns = [], []
            for i in indices:
                entry, anns = _entries(root, images[i], len(coco_images) + 1, len(coco_anns) + 1)
                coco_images.append(entry)
                coco_anns += anns
                shutil.copy2(images[i], folder / "images" / images[i].name)
            data = dict(
                images=coco_images,
                annotations=coco_anns,
                categories=[dict(id=1, name="person", supercategory="person")],
            )
            atomic_write_text(folder / "annotations.json", json.dumps(data))
            counts[split] = len(coco_images)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    pf = sub.add_parser("pennfudan", help="Penn-Fudan pedestrians -> COCO train/val")
    pf.add_argument("src", type=Path, help="PennFudanPed tarball or extracted folder")
    pf.add_argument("out", type=Path, help="output folder (gets train/ and val/)")
    pf.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val")
    pf.add_argument("--seed", type=int, default=0, help="seed of the random split")
    args = parser.parse_args(argv)

    def body() -> int:
        counts = convert_pennfudan(
            args.src, args.out, val_fraction=args.val_fraction, seed=args.seed
        )
        print(f"wrote {args.out}/train ({counts['train']} images), {args.out}/val "
              f"({counts['val']})")  # fmt: skip
        return 0

    return run_tool(body)


if __name__ == "__main__":
    raise SystemExit(main())
