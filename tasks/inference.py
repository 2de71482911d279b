"""Run an exported resvision ``.onnx`` with ONNX Runtime: no torch, no training code.

This file imports only numpy, onnxruntime and PIL, so it can be copied alone into another
project. Everything it needs (task, class names, input layout and preprocessing) is read
from the model's own metadata (``tasks/export/metadata.py`` lists the keys).

>>> model = OnnxModel("model.onnx", provider="auto")   # load once
>>> results = model(["cat.jpg", array_hwc_uint8])         # one dict per image
>>> results[0]["probs"]                                    # classify: logits, probs
>>> model.run_batch(batch_nchw_uint8)                      # raw graph outputs by name

Providers: "auto" tries TensorRT, then CUDA, then CPU; "tensorrt", "cuda" and "cpu" ask for
one. A GPU provider that is listed but cannot run (no GPU, no CUDA or TensorRT libraries) gives
a warning and the next one in that order (TensorRT -> CUDA -> CPU), never a crash ("auto"
warns only when it ends on the CPU: TensorRT missing beside a working CUDA is no news);
``model.provider`` says which one really runs. On a GPU provider, inputs are copied once and
outputs are bound on the device (IO binding).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_CHOICES = {
    "auto": [TRT, CUDA, CPU],
    "tensorrt": [TRT, CUDA, CPU],
    "cuda": [CUDA, CPU],
    "cpu": [CPU],
}
DTYPES = {"uint8": np.uint8, "float32": np.float32}
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"
)  # fmt: skip


def physical_cores() -> int:
    """CPU cores this process may use (affinity-aware), for ``intra_op_num_threads``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@functools.cache
def _preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels once per process (this module imports no
    torch, which would otherwise have loaded them)."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


@contextlib.contextmanager
def _ort_quiet() -> Iterator[None]:
    """ORT's process-wide logger at "fatal only" for a while: a GPU provider that cannot load
    logs errors before the session's own severity applies; the caller warns once instead."""
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # ORT's default: warnings and above


class UnloadableModelError(ValueError):
    """ONNX Runtime cannot load the file: not an ONNX model, a broken one, or operators this
    ONNX Runtime lacks. ``reason``: ORT's own first line, for callers that know the file is a
    fresh export (``tools/export_onnx.py`` names the opset instead)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{str(path)!r} is not a loadable ONNX model ({reason}); expected a file written "
            "by tools/export_onnx.py"
        )
        self.reason = reason


def create_session(
    path: str | Path, provider: str = "auto", threads: int | None = None
) -> ort.InferenceSession:
    """An ORT session on the best available of the requested providers (see module doc)."""
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"provider={provider!r}: expected one of {', '.join(PROVIDER_CHOICES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.log_severity_level = 3  # errors only: GPU providers failing to load are handled below
    available = ort.get_available_providers()
    chain = [p for p in PROVIDER_CHOICES[provider] if p in available] or [CPU]
    if chain != [CPU]:
        _preload_gpu_libraries()
    skipped: list[str] = []  # GPU providers that could not run, in the order tried
    for first in range(len(chain)):
        try:  # ORT's own fallback notice (printed) and error logs give way to one warning
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _ort_quiet():
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(str(path), options, providers=chain[first:])
        except Exception as err:  # a listed GPU provider whose libraries or device are missing
            if chain[first:] == [CPU]:  # the file itself: not an ONNX model, or a broken one
                raise UnloadableModelError(path, str(err).splitlines()[0]) from None
            skipped.append(f"{chain[first]} failed to start ({str(err).splitlines()[0]})")
            continue
        if session.get_providers()[0] != chain[first]:  # ORT dropped them and fell back itself
            dropped = [p for p in chain[first:] if p not in session.get_providers()]
            unusable = " and ".join(dropped)
            skipped.append(f"{unusable} not usable here (no GPU, or its libraries missing)")
        break
    active = session.get_providers()[0]
    # "auto" asks for the best that runs: a GPU one running is that, whatever was skipped
    # (onnxruntime-gpu lists TensorRT even where its libraries are not installed)
    if skipped and not (provider == "auto" and active != CPU):
        warnings.warn("; ".join(skipped) + f"; running on {active}", stacklevel=3)
    elif provider != "auto" and active != PROVIDER_CHOICES[provider][0]:
        wanted = PROVIDER_CHOICES[provider][0]
        warnings.warn(f"{wanted} is not available here; running on {active}", stacklevel=3)
    return session


# what PIL raises for a file it cannot decode: broken headers and data (OSError, SyntaxError,
# ValueError) and pixel counts over Image.MAX_IMAGE_PIXELS (DecompressionBombError)
PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> ``RGB``. Transparent pixels are composited onto white (not black),
    16/32-bit greyscale is rescaled to 0..255 instead of clipped (float images in 0..1 too)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file: EXIF rotation applied, any mode through ``to_rgb``.
    The one decoder of the project: training reads files through it too
    (``tasks.images.read_image_rgb``), so every path turns a file into the same pixels.

    size: when given, resize to ``size x size`` (bilinear, antialiased).
    Raises FileNotFoundError for a missing file, ValueError naming a file that does not decode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF; the pixels are what matter
            with Image.open(path) as img:
                img.load()
                img = to_rgb(ImageOps.exif_transpose(img))
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
                return np.asarray(img, dtype=np.uint8).copy()
    except PIL_DECODE_ERRORS as err:
        raise ValueError(f"cannot decode image {str(path)!r}: {err}") from None


class OnnxModel:
    """A loaded resvision ONNX model: ``model(images) -> list of per-image result dicts``.

    Results: classify ``logits [K]``, ``probs [K]``; detect ``boxes [N, 4]`` (x1y1x2y2 input
    pixels), ``scores [N]``, ``labels [N]`` (1-based); segment ``logits [K, H, W]``,
    ``labels [H, W]``.
    """

    def __init__(
        self, path: str | Path, provider: str = "auto", threads: int | None = None
    ) -> None:
        self.path = Path(path)
        self.session = create_session(path, provider, threads)
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        if "task" not in meta or "input" not in meta:
            raise ValueError(
                f"{str(self.path)!r} has no resvision metadata ('task', 'input'); "
                "expected a model written by tools/export_onnx.py"
            )
        self.metadata: dict[str, Any] = dict(meta)
        for key in ("class_names", "input", "outputs", "preprocess", "feature_info"):
            if key in meta:
                self.metadata[key] = json.loads(meta[key])
        self.task: str = meta["task"]
        self.class_names: list[str] = self.metadata.get("class_names", [])
        self.input = self.metadata["input"]
        self.outputs: list[str] = [o.name for o in self.session.get_outputs()]
        self.dtype = DTYPES[self.input["dtype"]]
        self._binding = self.provider in (TRT, CUDA)  # io binding only where a GPU EP runs

    # ---- raw batches ------------------------------------------------------------------
    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate ``[B, 3, H, W]`` against the graph's input; one clear error otherwise."""
        shape = self.input["shape"]
        want = "x".join("?" if s is None else str(s) for s in shape)
        if batch.ndim != 4 or batch.shape[1] != 3 or 0 in batch.shape:
            raise ValueError(
                f"{self.path.name}: got an input of shape {list(batch.shape)}; expected "
                f"[B, 3, H, W] RGB ({want}; B, H, W >= 1) or images [H, W, 3]"
            )
        if batch.dtype != self.dtype:
            if self.dtype == np.float32 and batch.dtype == np.uint8:
                batch = batch.astype(np.float32)
            else:
                raise ValueError(
                    f"{self.path.name}: got dtype {batch.dtype}; expected {self.input['dtype']} "
                    "pixels in 0..255"
                )
        elif batch.dtype == np.float32:
            self._check_pixel_range(batch)
        for axis, (got, fixed) in enumerate(zip(batch.shape, shape, strict=False)):
            if fixed is not None and got != fixed:
                raise ValueError(
                    f"{self.path.name} was exported with a fixed input shape {want}; got "
                    f"{list(batch.shape)} (axis {axis}); re-export with --dynamic or resize"
                )
        return np.ascontiguousarray(batch)

    def _check_pixel_range(self, batch: np.ndarray) -> None:
        """A float graph takes raw pixels in 0..255 and normalises them itself: values out of
        that range (already normalised, 16-bit, NaN) are an error, and a batch whose pixels
        are all <= 1 (scaled to 0..1 first?) a warning, since it would run but answer wrongly
        (a nearly black frame is possible, so not an error)."""
        lo, hi = float(batch.min()), float(batch.max())
        if not (0.0 <= lo and hi <= 255.0):  # NaN fails both
            raise ValueError(
                f"{self.path.name}: got pixel values {lo:g}..{hi:g}; expected raw RGB pixels in "
                "0..255 (the graph normalises them itself)"
            )
        if 0.0 < hi <= 1.0:
            warnings.warn(
                f"{self.path.name}: every pixel value is <= {hi:g}; expected 0..255 (images "
                "scaled to 0..1? multiply by 255)",
                stacklevel=4,
            )

    def run_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs by name for ``batch [B, 3, H, W]`` (checked first)."""
        batch = self.check_batch(batch)
        if not self._binding:
            return dict(zip(self.outputs, self.session.run(None, {"images": batch}), strict=False))
        binding = self.session.io_binding()
        binding.bind_cpu_input("images", batch)
        for name in self.outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.outputs, binding.copy_outputs_to_cpu(), strict=False))

    # ---- images -----------------------------------------------------------------------
    def prepare(self, image: str | Path | np.ndarray) -> np.ndarray:
        """One image -> uint8 or float [3, H, W]; classification images are resized with PIL
        (bilinear) to the trained size, as the training data was."""
        arr = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or 0 in arr.shape:  # 0 x W: nothing to see
            raise ValueError(
                f"got an image of shape {list(arr.shape)}; expected [H, W, 3] RGB, H, W >= 1 "
                f"({self.input['dtype']}, 0..255), a file path, or a [B, 3, H, W] batch"
            )
        pre = self.metadata.get("preprocess", {})
        if pre.get("resize") == "square" and arr.shape[:2] != (pre["size"],) * 2:
            if arr.dtype != np.uint8:
                raise ValueError(f"got dtype {arr.dtype}; expected uint8 images to resize")
            arr = np.asarray(Image.fromarray(arr).resize((pre["size"],) * 2, Image.BILINEAR))
        return arr.transpose(2, 0, 1)

    def __call__(self, images: Any) -> list[dict[str, np.ndarray]]:
        """Per-image results for a path, an ``[H, W, 3]`` array, a list of those, or a
        ``[B, 3, H, W]`` batch. Images of different sizes run one at a time; on a graph
        exported with a fixed batch B, a list runs B images at a time (the last group filled
        up with copies of its last image, whose results are dropped)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return self._split(self.run_batch(images))
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        prepared = [self.prepare(img) for img in images]
        if not prepared:
            raise ValueError("no images given")
        same_size = len({p.shape for p in prepared}) == 1
        groups = [prepared] if same_size else [[p] for p in prepared]
        results = []
        for group in groups:
            size = self.input["shape"][0] or len(group)  # None: a dynamic batch
            for i in range(0, len(group), size):
                chunk = group[i : i + size]
                full = chunk + chunk[-1:] * (size - len(chunk))
                results += self._split(self.run_batch(np.stack(full)))[: len(chunk)]
        return results

    def _split(self, out: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        batch = len(next(iter(out.values())))
        if self.task == "detect":
            nums = out["num_detections"]
            return [
                {k: out[k][i, : int(nums[i])] for k in ("boxes", "scores", "labels")}
                for i in range(batch)
            ]
        return [{k: v[i] for k, v in out.items()} for i in range(batch)]
