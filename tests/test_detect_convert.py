"""tools/convert.py pennfudan on a tiny fake Penn-Fudan tree (text boxes + instance masks)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tasks.detect.dataset import load_detection_folder

TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert.py"


def _fake_pennfudan(root: Path, n: int = 5) -> Path:
    for d in ("PNGImages", "PedMasks", "Annotation"):
        (root / "PennFudanPed" / d).mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        stem = f"FudanPed{i:05d}"
        Image.fromarray(np.full((40, 50, 3), 9 * i, dtype=np.uint8)).save(
            root / "PennFudanPed" / "PNGImages" / f"{stem}.png"
        )
        mask = np.zeros((40, 50), dtype=np.uint8)
        mask[5:20, 3:13] = 1  # object 1: columns 3..12, rows 5..19
        mask[10:35, 30:45] = 2
        Image.fromarray(mask).save(root / "PennFudanPed" / "PedMasks" / f"{stem}_mask.png")
        (root / "PennFudanPed" / "Annotation" / f"{stem}.txt").write_text(
            f'Image filename : "PennFudanPed/PNGImages/{stem}.png"\n'
            'Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : '
            "(4, 6) - (13, 20)\n"
            'Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : '
            "(31, 11) - (45, 35)\n"
        )
    return root


def test_convert_pennfudan_tarball_to_coco(tmp_path):
    src = _fake_pennfudan(tmp_path / "src")
    tarball = tmp_path / "pf.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src / "PennFudanPed", arcname="PennFudanPed")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(TOOL), "pennfudan", str(tarball), str(out), "--val-fraction", "0.4"],
        check=True,
    )
    train = json.loads((out / "train" / "annotations.json").read_text())
    val = json.loads((out / "val" / "annotations.json").read_text())
    assert len(train["images"]) == 3 and len(val["images"]) == 2
    assert {i["file_name"] for i in train["images"]}.isdisjoint(
        i["file_name"] for i in val["images"]
    )
    ann = train["annotations"][0]
    assert ann["bbox"] == [3.0, 5.0, 10.0, 15.0] and ann["area"] == 150.0
    decoded = mask_utils.decode(
        {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
    )
    assert decoded.sum() == 150 and decoded[5:20, 3:13].all()
    records, names, _ = load_detection_folder(
        out / "train", field="data.train", class_names=None, fix=False
    )
    assert names == ["person"] and len(records) == 3 and len(records[0].boxes) == 2


def test_convert_pennfudan_folder_same_split_for_same_seed(tmp_path):
    convert_pennfudan = runpy.run_path(str(TOOL), run_name="tool")["convert_pennfudan"]
    src = _fake_pennfudan(tmp_path / "src")
    a = convert_pennfudan(src, tmp_path / "a", val_fraction=0.2, seed=3)
    b = convert_pennfudan(src / "PennFudanPed", tmp_path / "b", val_fraction=0.2, seed=3)
    assert a == b == {"val": 1, "train": 4}
    assert (tmp_path / "a" / "val" / "annotations.json").read_text() == (
        tmp_path / "b" / "val" / "annotations.json"
    ).read_text()


def test_convert_errors_are_one_line_naming_the_input(tmp_path):
    """A missing or non-tar SRC, or an OUT that already holds a split: one error line (the
    split would otherwise mix old images with the new annotations)."""
    (tmp_path / "notes.txt").write_text("not a tarball")
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "old.png").write_bytes(b"")
    src = _fake_pennfudan(tmp_path / "src")
    for args, message in [
        ([tmp_path / "missing.tar.gz", tmp_path / "o1"], "missing.tar.gz' does not exist"),
        ([tmp_path / "notes.txt", tmp_path / "o2"], "notes.txt' is not a readable tar archive"),
        ([src, tmp_path / "out"], "train' is not empty"),
    ]:
        done = subprocess.run([sys.executable, str(TOOL), "pennfudan", *map(str, args)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
        assert "Traceback" not in done.stderr
