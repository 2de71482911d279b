"""Classification data: ImageFolder loading, odd files, clear errors, deterministic split,
batched augmentation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tasks.classify.augment import augment_batch, random_resized_crop, random_translate
from tasks.classify.data import load_image_folder, stratified_split, synthetic_images
from tasks.images import DataError, ImageDecodeError


def make_tree(root, counts=None, size=(12, 12)):
    """root/<class>/<i>.(png|jpg) with a distinct flat colour per class."""
    counts = counts or {"cat": 3, "dog": 2}
    for ci, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            colour = (40 + 100 * ci, 20 * i, 200 - 80 * ci)
            ext = "png" if i % 2 == 0 else "jpg"
            Image.new("RGB", size, colour).save(root / name / f"{i}.{ext}")
    return root


def test_image_folder_loads_sorted_classes_in_memory(tmp_path):
    root = make_tree(tmp_path / "train", {"zebra": 2, "ant": 3})
    ds = load_image_folder(root, 8)
    assert ds.class_names == ["ant", "zebra"]
    assert ds.images.shape == (5, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    img, label = ds[4]
    assert label == 1 and img.shape == (3, 8, 8)


def test_odd_modes_sizes_and_exif_load(tmp_path):
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("L", (10, 20), 128).save(root / "a" / "gray.png")
    Image.new("RGBA", (30, 30), (255, 0, 0, 255)).save(root / "a" / "rgba.png")
    Image.new("RGB", (9, 9), (0, 255, 0)).convert("P").save(root / "b" / "pal.png")
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(root / "b" / "cmyk.jpg")
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 8
    img.save(root / "b" / "rot.jpg", exif=exif)
    ds = load_image_folder(root, 6, workers=2)
    assert ds.images.shape == (5, 3, 6, 6)
    assert ds.images[1, :, 3, 3].tolist() == [255, 0, 0]  # a/rgba.png
    assert ds.images[0, :, 3, 3].tolist() == [128, 128, 128]  # a/gray.png


def test_corrupt_image_error_and_skip_bad(tmp_path):
    root = make_tree(tmp_path / "train")
    (root / "dog" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError, match=r"bad\.jpg.*data\.skip_bad=true"):
        load_image_folder(root, 8)
    ds = load_image_folder(root, 8, skip_bad=True)
    assert [p.name for p in ds.skipped] == ["bad.jpg"] and len(ds) == 5


def test_dataset_root_with_split_folders_is_not_an_image_folder(tmp_path):
    """data.train=ROOT holding train/<class>/ and val/<class>/ would train a "train vs val"
    classifier; a broken link named like an image is left out with a note, not a crash."""
    make_tree(tmp_path / "root" / "train")
    make_tree(tmp_path / "root" / "val")
    Image.new("RGB", (8, 8)).save(tmp_path / "root" / "test.png")  # loose, not a split folder
    (tmp_path / "root" / "test").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "root" / "test" / "x.png")
    splits = r"sub-folders \['test', 'train', 'val'\] are data splits"
    with pytest.raises(DataError, match=splits + r".* at '.*root/train'$"):
        load_image_folder(tmp_path / "root", 8)
    with pytest.raises(DataError, match=splits + r".* at '.*root/val'$"):
        load_image_folder(tmp_path / "root", 8, field="data.val")
    root = make_tree(tmp_path / "flowers")
    (root / "dog" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert len(load_image_folder(root, 8, cache_dir=str(tmp_path / "cache"))) == 5


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_image_folder(tmp_path / "nope", 8)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path / "flat", 8)
    root = make_tree(tmp_path / "train")
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        load_image_folder(root, 8)


def test_cache_roundtrip_and_invalidation(tmp_path):
    root = make_tree(tmp_path / "train")
    cache = tmp_path / "cache"
    first = load_image_folder(root, 8, cache_dir=str(cache))
    assert len(list(cache.glob("*.pt"))) == 1
    again = load_image_folder(root, 8, cache_dir=str(cache))
    assert torch.equal(first.images, again.images)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "cat" / "new.png")  # new file: new key
    grown = load_image_folder(root, 8, cache_dir=str(cache))
    assert len(grown) == len(first) + 1 and len(list(cache.glob("*.pt"))) == 2


def test_stratified_split_is_deterministic_and_stratified():
    labels = torch.arange(4).repeat_interleave(torch.tensor([10, 20, 30, 40]))
    tr, va = stratified_split(labels, 0.1, seed=3)
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert torch.bincount(labels[va]).tolist() == [1, 2, 3, 4]
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))
    _, va3 = stratified_split(labels, 0.1, seed=4)
    assert not torch.equal(va, va3)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.5, seed=0)


def test_synthetic_is_deterministic():
    a, la = synthetic_images(4, 5, 16, seed=0)
    b, lb = synthetic_images(4, 5, 16, seed=0)
    assert a.shape == (20, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, synthetic_images(4, 5, 16, seed=1)[0])


def test_translate_and_flip_keep_pixels():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).reshape(2, 3, 6, 6)
    torch.manual_seed(0)
    out = random_translate(x, 2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # the interior 2x2 of a 6x6 image shifted by <= 2 pixels always comes from the original
    for b in range(2):
        window = out[b, 0, 2:4, 2:4]
        found = any(
            torch.equal(window, x[b, 0, 2 + dy : 4 + dy, 2 + dx : 4 + dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found
    flipped = augment_batch(x, "flip")
    for b in range(2):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(2))
    with pytest.raises(ValueError, match="data.augment"):
        augment_batch(x, "bogus")


def test_random_resized_crop_full_scale_is_identity():
    x = torch.rand(3, 3, 8, 8)
    out = random_resized_crop(x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    assert random_resized_crop(x, 4).shape == (3, 3, 4, 4)


def test_split_and_class_checks_refuse_what_would_waste_a_run(tmp_path, capsys):
    """A class with every image held out or unreadable, one class only, no validation image:
    each refused before training, naming the class or setting."""
    from tasks.classify.config import ClassifyConfig
    from tasks.classify.task import ClassifyTask
    from tasks.config import load_config
    from tasks.images import DataError

    def task(root, *extra):
        cfg = load_config(
            ClassifyConfig, overrides=[f"data.train={root}", "data.image_size=8", *extra]
        )
        return ClassifyTask(cfg)

    root = make_tree(tmp_path / "uneven", {"a": 10, "b": 2})
    train, val = task(root, "data.val_fraction=0.75").build_datasets()
    assert train.labels.tolist().count(1) == 1 and val.labels.tolist().count(1) == 1
    one = make_tree(tmp_path / "one", {"a": 4})
    with pytest.raises(DataError, match=r"1 class folder \(\['a'\]\).*two or more"):
        task(one).build_datasets()
    bad = make_tree(tmp_path / "bad", {"a": 4, "b": 2})
    for f in (bad / "b").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"\['b'\] have no training image"):
        task(bad, "data.skip_bad=true").build_datasets()
    single = make_tree(tmp_path / "single", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="hold-out.*no readable image to validate on"):
        task(single).build_datasets()


def test_hidden_folders_inside_classes_are_skipped_and_cache_keeps_skip_bad(tmp_path):
    from tasks.classify.data import scan_image_folder

    root = make_tree(tmp_path / "d")
    (root / "cat" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (12, 12)).save(root / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
    assert len(scan_image_folder(root).paths) == 5
    (root / "__MACOSX" / "cat").mkdir(parents=True)  # what a zip made on macOS carries
    (root / "__MACOSX" / "cat" / "._0.jpg").write_bytes(b"resource fork")
    assert scan_image_folder(root).class_names == ["cat", "dog"]
    (root / "dog" / "1.jpg").write_bytes(b"broken")
    cache = tmp_path / "cache"
    assert len(load_image_folder(root, 8, skip_bad=True, cache_dir=str(cache)).skipped) == 1
    with pytest.raises(ImageDecodeError, match=r"1\.jpg"):  # not answered from that cache
        load_image_folder(root, 8, skip_bad=False, cache_dir=str(cache))


def test_images_in_symlinked_sub_folders_of_a_class_are_found(tmp_path):
    """rglob does not enter a symlinked folder: its images were silently left out."""
    from tasks.classify.data import scan_image_folder

    root = make_tree(tmp_path / "d")
    make_tree(tmp_path / "more", {"x": 2})
    (root / "cat" / "more").symlink_to(tmp_path / "more" / "x")
    (root / "cat" / "more" / "loop").symlink_to(root / "cat")  # a link back up: no loop
    listing = scan_image_folder(root)
    assert len(listing.paths) == 7 and listing.labels.count(0) == 5


def test_class_names_spelled_decomposed_match_composed_ones(tmp_path):
    """A folder named "café" on macOS is often stored decomposed (NFD): a val folder written
    elsewhere (NFC) was refused as a class that train lacks, both shown as 'café'."""
    import unicodedata

    train = make_tree(tmp_path / "train", {unicodedata.normalize("NFD", "café"): 2, "tea": 2})
    val = make_tree(tmp_path / "val", {"café": 1, "tea": 1})
    names = load_image_folder(train, 8).class_names
    assert names == ["café", "tea"] == load_image_folder(val, 8).class_names
    assert names[0] == unicodedata.normalize("NFC", "café")


def test_class_order_is_one_whatever_the_unicode_form_on_disk(tmp_path):
    """Classes sort as strings, as torchvision's ImageFolder does ("10" before "2", upper
    case before lower), by their NFC names: the same folders copied from macOS (decomposed
    "café", e + combining accent, sorts before "caff") were numbered café, caff there and
    caff, café elsewhere, so one data set had two label orders. One name spelled both ways
    is one clear error."""
    import unicodedata

    from tasks.classify.data import scan_image_folder

    nfd = unicodedata.normalize("NFD", "café")
    counts = {"2": 1, "10": 1, "Cat": 1, "cat": 1, "sea lion": 1, "caff": 1, "日本": 1}
    expected = ["10", "2", "Cat", "caff", "café", "cat", "sea lion", "日本"]
    composed = scan_image_folder(make_tree(tmp_path / "nfc", {**counts, "café": 1}))
    decomposed = scan_image_folder(make_tree(tmp_path / "nfd", {**counts, nfd: 1}))
    assert composed.class_names == decomposed.class_names == expected
    assert [p.parent.name for p in decomposed.paths][3:5] == ["caff", nfd]
    assert decomposed.labels == list(range(8))  # each image keeps its own folder's label
    make_tree(tmp_path / "nfd", {"café": 1})
    with pytest.raises(DataError, match=r"class folders 'cafe\u0301' and 'café' spell one "
                       r"name 'café' in two Unicode forms"):  # fmt: skip
        scan_image_folder(tmp_path / "nfd")
