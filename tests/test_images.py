"""read_image_rgb: every odd file format comes out as uint8 RGB, bad files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.images import DataError, ImageDecodeError, read_image_rgb


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_png_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image_rgb(_save(Image.fromarray(arr), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image_rgb(_save(Image.fromarray(arr, "L"), tmp_path / "g.png"))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], arr)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 1] = (0, 0, 255, 0)  # fully transparent becomes white
    out = read_image_rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_palette_and_cmyk(tmp_path):
    rgb = Image.new("RGB", (4, 4), (10, 200, 30))
    out = read_image_rgb(_save(rgb.convert("P"), tmp_path / "p.png"))
    assert out.shape == (4, 4, 3) and abs(int(out[0, 0, 1]) - 200) < 8
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = read_image_rgb(_save(cmyk, tmp_path / "c.jpg", quality=95))
    assert out.shape == (4, 4, 3)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60 and out[0, 0, 2] < 60


def test_16bit_grayscale_is_rescaled(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    img = Image.fromarray(arr)  # mode I;16
    out = read_image_rgb(_save(img, tmp_path / "d.png"))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and 126 <= out[1, 0, 0] <= 129


def test_float_images_in_0_to_1_are_scaled(tmp_path):
    """A float TIFF holding 0..1 (what numpy pipelines save) is not crushed to values 0/1."""
    arr = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    out = read_image_rgb(_save(Image.fromarray(arr, "F"), tmp_path / "f.tif"))
    assert out[..., 0].tolist() == [[0, 255], [128, 64]]


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)  # 2 rows x 4 columns, left column red
    arr[:, 0] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = read_image_rgb(_save(img, tmp_path / "r.png", exif=exif))
    assert out.shape == (4, 2, 3)  # displayed portrait
    assert out[0, :, 0].tolist() == [255, 255]  # rotated clockwise: left column -> top row
    assert out[1:, :, 0].max() == 0


def test_resize_on_load(tmp_path):
    path = _save(Image.new("RGB", (40, 20), (1, 2, 3)), tmp_path / "big.png")
    out = read_image_rgb(path, size=8)
    assert out.shape == (8, 8, 3) and tuple(out[4, 4]) == (1, 2, 3)


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg") as err:
        read_image_rgb(bad)
    assert "skip_bad" not in str(err.value)  # a classification-only option; predict has none
    good = _save(Image.new("RGB", (64, 64), (5, 5, 5)), tmp_path / "trunc.jpg")
    good.write_bytes(good.read_bytes()[:200])  # truncated file
    with pytest.raises(ImageDecodeError, match="trunc.jpg"):
        read_image_rgb(good)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image_rgb(tmp_path / "nothere.png")


def test_images_over_pils_pixel_limit_are_named(tmp_path, monkeypatch):
    """PIL refuses images over Image.MAX_IMAGE_PIXELS (decompression bombs) with an error
    that is not an OSError: every reader turns it into its one-line error."""
    from tasks.images import displayed_size, list_images
    from tasks.segment.masks import read_mask

    path = _save(Image.new("L", (64, 64)), tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 > 2 x the limit: an error
    for read in (read_image_rgb, displayed_size, lambda p: list_images([p], unique_stems=False)):
        with pytest.raises(ImageDecodeError, match=r"huge\.png.*exceeds limit"):
            read(path)
    with pytest.raises(DataError, match=r"cannot read mask .*huge\.png.*exceeds limit"):
        read_mask(path)


def test_list_images_checks_every_path_before_any_output(tmp_path):
    """tools/predict.py and infer_onnx.py: folders expand to their images, and a bad path
    stops the tool before it writes anything (not half-way through the list)."""
    from tasks.images import DataError, list_images

    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.jpg").write_bytes(b"macOS metadata")
    assert [p.name for p in list_images([folder], unique_stems=True)] == ["a.jpg", "b.png"]
    with pytest.raises(ImageDecodeError, match=r"notes\.txt' as an image"):
        list_images([folder / "a.jpg", folder / "notes.txt"], unique_stems=False)
    with pytest.raises(FileNotFoundError, match="gone.jpg' does not exist"):
        list_images([folder / "gone.jpg"], unique_stems=False)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "cut.png")
    whole = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # a valid header, half the data
    with pytest.raises(ImageDecodeError, match=r"cut\.png' as an image"):
        list_images([folder / "a.jpg", tmp_path / "cut.png"], unique_stems=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no image files \(expected names"):
        list_images([tmp_path / "empty"], unique_stems=False)
    (tmp_path / "empty" / "cat").mkdir()  # an ImageFolder root: its classes hold the images
    Image.new("RGB", (4, 4)).save(tmp_path / "empty" / "cat" / "0.jpg")
    with pytest.raises(FileNotFoundError, match=r"sub-folders do \(1\): name them, e.g. .*cat"):
        list_images([tmp_path / "empty"], unique_stems=False)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="share the name 'a'"):
        list_images([folder / "a.jpg", tmp_path / "a.png"], unique_stems=True)
    assert len(list_images([folder / "a.jpg", tmp_path / "a.png"], unique_stems=False)) == 2
