"""tasks.inference.OnnxModel: inputs it accepts, bad inputs it names, provider fallback,
and a static int8 export that stays close to fp32."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tasks import TASKS, inference
from tasks.classify.data import synthetic_images
from tasks.config import load_config
from tasks.export.metadata import build_metadata
from tasks.export.onnx_export import ExportError, export_onnx
from tasks.export.quantize import to_int8
from tasks.export.spec import ExportSpec, build_export
from tasks.inference import OnnxModel

SIZE = 32
CUDA_RUNS = torch.cuda.is_available() and inference.CUDA in ort.get_available_providers()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A static-shape (batch 2, 32x32) ResNet-20 classifier, its spec and the task."""
    tmp = tmp_path_factory.mktemp("onnx")
    over = [f"data.image_size={SIZE}", "model.zero_init_residual=false"]
    task = TASKS.create("classify", cfg=load_config(TASKS.get("classify").config_class, None, over))
    task.class_names = [f"c{i}" for i in range(10)]
    torch.manual_seed(0)
    model = task.build_model().eval()
    spec = build_export(model, task)
    shape = [2, 3, SIZE, SIZE]
    meta = build_metadata(task, model, spec, input_dtype="uint8", input_shape=shape)
    path = tmp / "static.onnx"
    export_onnx(spec, path, metadata=meta, dynamic=False, batch=2)
    return path, spec, task


def test_paths_arrays_and_batches_give_the_same_results(exported, tmp_path):
    path, spec, _ = exported
    model = OnnxModel(path, provider="cpu")
    imgs = synthetic_images(10, 1, SIZE, seed=3)[0][:2]
    hwc = [im.permute(1, 2, 0).numpy() for im in imgs]
    files = []
    for i, arr in enumerate(hwc):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(arr).save(files[-1])
    by_file, by_array = model(files), model(hwc)
    by_batch = model(imgs.numpy())
    expected = spec.module(imgs)[1].detach().numpy()
    for i in range(2):
        for got in (by_file[i], by_array[i], by_batch[i]):
            np.testing.assert_allclose(got["probs"], expected[i], atol=1e-5)
    assert model.task == "classify" and model.class_names[0] == "c0"
    assert model.metadata["preprocess"]["size"] == SIZE


def test_a_list_runs_in_groups_of_a_static_graphs_batch(exported):
    """The fixture's graph takes exactly 2 images: a list of 5 runs as 2 + 2 + 1 (that one
    padded with a copy), each result equal to PyTorch's. The int8 report feeds lists of 32
    images, and export without --dynamic gives a static graph."""
    path, spec, _ = exported
    model = OnnxModel(path, provider="cpu")
    imgs = synthetic_images(10, 1, SIZE, seed=4)[0][:5]
    got = model([im.permute(1, 2, 0).numpy() for im in imgs])
    expected = spec.module(imgs)[1].detach().numpy()
    assert len(got) == 5
    for i in range(5):
        np.testing.assert_allclose(got[i]["probs"], expected[i], atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 1, SIZE, SIZE), np.uint8), r"expected \[B, 3, H, W\]"),
        (np.zeros((2, 3, SIZE, SIZE), np.float32), "expected uint8"),
        (np.zeros((3, 3, SIZE, SIZE), np.uint8), "fixed input shape 2x3x32x32"),
        (np.zeros((SIZE, SIZE), np.uint8), r"expected \[H, W, 3\]"),
        (np.zeros((SIZE, SIZE, 4), np.uint8), r"expected \[H, W, 3\]"),
        (np.zeros((0, SIZE, 3), np.uint8), r"shape \[0, 32, 3\]; expected .*H, W >= 1"),  # was
        (np.zeros((2, 3, 0, SIZE), np.uint8), r"\[2, 3, 0, 32\]; expected .*H, W >= 1"),  # answered
    ],
)
def test_bad_inputs_name_what_was_expected(exported, bad, message):
    model = OnnxModel(exported[0], provider="cpu")
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_a_float_graph_checks_that_pixels_are_raw_0_to_255(exported, tmp_path):
    """Normalised or 16-bit values are an error; 0..1 images (a common slip) a warning: the
    graph would answer for a nearly black image."""
    _, spec, task = exported
    meta = build_metadata(task, spec.module.model, spec, input_dtype="float32",
                          input_shape=[2, 3, SIZE, SIZE])  # fmt: skip
    path = tmp_path / "float.onnx"
    export_onnx(spec, path, metadata=meta, input_dtype="float32", dynamic=False, batch=2)
    model = OnnxModel(path, provider="cpu")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, SIZE, SIZE)).astype(np.float32)
    for bad, shown in ((pixels - 128, "-127"), (pixels * 256, "7.05"), (pixels * np.nan, "nan")):
        with pytest.raises(ValueError, match=f"pixel values {shown}.*expected raw RGB pixels"):
            model(bad)
    with pytest.warns(UserWarning, match=r"<= 0.99.*expected 0..255 \(images scaled to 0..1"):
        model(pixels / 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = spec.module(torch.from_numpy(pixels))[1].detach().numpy()
        np.testing.assert_allclose(np.stack([r["probs"] for r in model(pixels)]), expected,
                                   atol=1e-5)  # fmt: skip


def test_an_operator_onnx_cannot_express_is_one_export_error(exported, tmp_path):
    """A timm ViT run away from its native size resamples its position embedding with an
    antialiased bicubic resize, which the exporter cannot write: one ExportError naming it
    (tools/export_onnx.py prints it as one line), not the exporter's traceback."""

    class Antialiased(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            size = (x.shape[-2] // 2, x.shape[-1] // 2)
            return (F.interpolate(x.float(), size, mode="bicubic", antialias=True),)

    spec = ExportSpec(Antialiased(), ("out",), {}, (SIZE, SIZE))
    with pytest.raises(ExportError, match=r"cannot write this model at opset 17: .*bicubic"):
        export_onnx(spec, tmp_path / "m.onnx", metadata={}, dynamic=False)


def test_model_without_metadata_is_refused(exported, tmp_path):
    model = onnx.load(str(exported[0]))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="no resvision metadata"):
        OnnxModel(tmp_path / "bare.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxModel(tmp_path / "missing.onnx")


def test_gpu_provider_that_fails_to_start_falls_back_to_cpu(exported, monkeypatch):
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: [inference.CUDA, inference.CPU])

    def session(path, options, providers):  # noqa: ANN001, ANN202
        if inference.CUDA in providers:
            raise RuntimeError("libcudart.so: cannot open shared object file")
        return real(path, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.warns(UserWarning, match="CUDAExecutionProvider failed to start"):
        model = OnnxModel(exported[0], provider="auto")
    assert model.provider == inference.CPU and not model._binding


def test_tensorrt_that_fails_to_start_falls_back_to_cuda_then_cpu(exported, monkeypatch):
    real = ort.InferenceSession
    tried = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: [inference.TRT, inference.CUDA,
                                                                 inference.CPU])  # fmt: skip

    def session(path, options, providers):  # noqa: ANN001, ANN202
        tried.append(providers[0])
        if inference.TRT in providers:
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        return real(path, options, providers=[inference.CPU])  # CUDA dropped, as ORT does

    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.warns(UserWarning, match="TensorrtExecutionProvider failed to start.*libnvinfer"
                      ".*CUDAExecutionProvider not usable here.*; running on CPU"):  # fmt: skip
        model = OnnxModel(exported[0], provider="tensorrt")
    assert tried == [inference.TRT, inference.CUDA]
    assert model.provider == inference.CPU


def test_auto_skips_a_missing_tensorrt_quietly_when_cuda_runs(exported, monkeypatch):
    """provider="auto" on a GPU machine without TensorRT's libraries: CUDA runs, and that is
    what "auto" asked for, so no warning; asking for "tensorrt" itself still warns."""
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: [inference.TRT, inference.CUDA,
                                                                 inference.CPU])  # fmt: skip

    class OnCuda:  # a CPU session that reports CUDA as its provider
        def __init__(self, path, options) -> None:  # noqa: ANN001
            self.session = real(path, options, providers=[inference.CPU])

        def get_providers(self) -> list[str]:
            return [inference.CUDA, inference.CPU]

    def session(path, options, providers):  # noqa: ANN001, ANN202
        if inference.TRT in providers:
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        return OnCuda(path, options)

    monkeypatch.setattr(ort, "InferenceSession", session)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert inference.create_session(exported[0], "auto").get_providers()[0] == inference.CUDA
    with pytest.warns(UserWarning, match="TensorrtExecutionProvider failed to start"):
        inference.create_session(exported[0], "tensorrt")


@pytest.mark.skipif(CUDA_RUNS, reason="CUDA really runs here (tests/test_cuda.py covers it)")
def test_gpu_provider_listed_but_inactive_warns(exported, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [inference.CUDA, inference.CPU])
    with pytest.warns(UserWarning, match="running on CPU"):  # no GPU here: ORT drops CUDA
        model = OnnxModel(exported[0], provider="cuda")
    assert model.provider == inference.CPU
    monkeypatch.setattr(ort, "get_available_providers", lambda: [inference.TRT, inference.CUDA,
                                                                 inference.CPU])  # fmt: skip
    with pytest.warns(UserWarning, match=f"^{inference.TRT} and {inference.CUDA} not usable") as w:
        OnnxModel(exported[0], provider="auto")  # ORT drops both at once: both are named
    assert w[0].filename == __file__  # the warning points at the caller, not at this library
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OnnxModel(exported[0], provider="cpu").provider == inference.CPU


def test_unknown_provider_is_refused(exported):
    with pytest.raises(ValueError, match="expected one of auto"):
        OnnxModel(exported[0], provider="gpu")


def test_int8_model_runs_and_stays_close_to_fp32(exported, tmp_path):
    """Static QDQ int8 of a random ResNet-20 on generated images: probabilities within 0.05
    and top-1 agreeing on at least 80% of 20 images (stated bound for untrained weights)."""
    path, _, task = exported
    images, _ = synthetic_images(10, 4, SIZE, seed=5)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, im in enumerate(images[:20]):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(calib / f"{i}.png")
    out = tmp_path / "int8.onnx"
    to_int8(path, out, calib)
    fp32, int8 = OnnxModel(path, provider="cpu"), OnnxModel(out, provider="cpu")
    assert int8.metadata["precision"] == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    test = images[20:40].numpy()
    p32 = np.concatenate([fp32.run_batch(test[i : i + 2])["probs"] for i in range(0, 20, 2)])
    p8 = np.concatenate([int8.run_batch(test[i : i + 2])["probs"] for i in range(0, 20, 2)])
    assert np.abs(p32 - p8).max() < 0.05
    assert (p32.argmax(1) == p8.argmax(1)).mean() >= 0.8


@pytest.mark.skipif(CUDA_RUNS, reason="CUDA really runs here")
def test_unusable_gpu_provider_gives_one_warning_not_ort_noise(exported, capfd):
    """onnxruntime-gpu without a GPU (this project's own CPU set-up) prints an "EP Error"
    banner and logs load failures itself; create_session turns them into one warning."""
    with pytest.warns(UserWarning, match="running on CPU"):
        OnnxModel(exported[0], provider="tensorrt")
    out, err = capfd.readouterr()
    assert "EP Error" not in out and "Failed to load library" not in err


def test_onnx_reader_decodes_like_training(tmp_path):
    """infer_onnx.py, int8 calibration and the --val report read files with the decoder
    training wraps (``tasks.images.read_image_rgb``): transparency on white, 16-bit greyscale
    rescaled (not clipped to white); a broken file is training's data error there."""
    from tasks.images import ImageDecodeError, read_image_rgb
    from tasks.inference import read_image

    Image.fromarray((np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)).save(tmp_path / "a.png")
    Image.new("RGBA", (3, 3), (10, 20, 30, 0)).save(tmp_path / "b.png")
    assert read_image(tmp_path / "a.png")[0, 1].tolist() == [19, 19, 19]  # 5000 / 65535 * 255
    assert read_image(tmp_path / "b.png")[0, 0].tolist() == [255, 255, 255]  # clear -> white
    assert read_image_rgb(tmp_path / "a.png", size=8).shape == (8, 8, 3)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"cannot decode image '.*c\.png'") as err:
        read_image(tmp_path / "c.png")
    assert not isinstance(err.value, ImageDecodeError)  # the ONNX API needs no training code
    with pytest.raises(ImageDecodeError, match=r"c\.png'.*delete or replace it"):
        read_image_rgb(tmp_path / "c.png")


def test_a_file_that_is_not_onnx_is_one_error(tmp_path):
    (tmp_path / "m.onnx").write_text("not a model")
    with pytest.raises(ValueError, match=r"m\.onnx' is not a loadable ONNX model"):
        inference.OnnxModel(tmp_path / "m.onnx", provider="cpu")
