"""The run folder's checkpoint files, always written atomically.

A run folder holds::

    config.yaml          merged config (also inside every weights file)
    model.safetensors    best weights (EMA weights when EMA is on); metadata: task, config, classes
    last.safetensors     latest raw weights, same metadata
    last.pt              resumable state: optimizer, grad scaler, EMA, step, epoch, sampler
                         position, RNG states. Tensors and primitive containers only, so
                         ``torch.load(path, weights_only=True)`` reads it.

Weights files are self-describing: ``tasks.load_model`` rebuilds the model from the metadata
alone. Every write goes to a temporary file in the same folder, is flushed and fsynced, then
``os.replace``-d over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

from tasks.config import ConfigError
from tasks.images import DataError

BEST_WEIGHTS = "model.safetensors"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last.pt"
CONFIG_FILE = "config.yaml"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist"
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def weights_metadata(task_name: str, config_yaml: str, class_names: list[str]) -> dict[str, str]:
    """safetensors metadata (string -> string) that makes a weights file self-describing."""
    return {
        "format": "pt",
        "task": task_name,
        "config": config_yaml,
        "class_names": json.dumps(list(class_names)),
    }


def check_metadata(metadata: dict[str, str], source: str | Path) -> None:
    """The keys ``weights_metadata`` writes are all there; a ConfigError naming ``source``
    (the file) and the first missing key otherwise."""
    for key in ("task", "config", "class_names"):
        if key not in metadata:
            raise ConfigError(
                f"{str(source)!r} has no {key!r} metadata; it was not written by resvision"
            )


def save_weights(path: str | Path, state: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    """Atomically write a state dict as safetensors (copied to contiguous CPU tensors)."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata=metadata))


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a safetensors file written by ``save_weights``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_safetensors_bytes(path.read_bytes()), metadata
    except (SafetensorError, OSError, ValueError) as err:
        if _is_torch_pickle(path):
            raise DataError(
                f"weights file {str(path)!r} is a PyTorch pickle (torch.save: a run's resume "
                "state last.pt, or a torchvision/timm .pth); expected a .safetensors file "
                "written by resvision: pass the run folder or its model.safetensors (a "
                ".pth starts a backbone through model.backbone_weights)"
            ) from None
        raise DataError(
            f"weights file {str(path)!r} is not readable ({err}); expected a .safetensors "
            "file written by resvision (a truncated copy? copy it again)"
        ) from None


def _is_torch_pickle(path: Path) -> bool:
    """True for a ``torch.save`` file: a zip archive (PyTorch >= 1.6) or a bare pickle."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def load_into(model: nn.Module, state: Mapping[str, Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model rebuilt from the
    config and data (the data's classes or the config changed since ``path`` was written)
    are one DataError naming the file and the first differences, not torch's long list."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise DataError(
            f"weights {str(path)!r} do not fit the model built from the current config and "
            f"data ({'; '.join(lines)[:300]}): the classes found in the data or the config "
            "changed since they were saved"
        ) from None


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a resumable state (tensors and primitive containers only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_resumable(
    run_dir: Path, weights: Mapping[str, Tensor], metadata: dict[str, str], state: dict[str, Any]
) -> None:
    """``last.safetensors`` + ``last.pt`` as a pair: both are written in full to hidden files
    first, then renamed one after the other, so a kill leaves the old pair or the new one.
    Both record ``state["step"]``: the microseconds between the two renames are the one gap,
    and ``tasks.resume.restore`` refuses a mismatched pair instead of resuming it wrongly."""
    pending = [(run_dir / f".{LAST_WEIGHTS}.next", run_dir / LAST_WEIGHTS),
               (run_dir / f".{LAST_STATE}.next", run_dir / LAST_STATE)]  # fmt: skip
    save_weights(pending[0][0], weights, {**metadata, "step": str(state["step"])})
    save_state(pending[1][0], state)
    for tmp, final in pending:
        os.replace(tmp, final)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume state {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load fails many ways on a damaged file
        raise DataError(
            f"resume state {str(path)!r} is not readable ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); "
            "a truncated copy? Without it the run cannot resume (its model.safetensors still "
            "loads for eval/predict/export)"
        ) from None


def rng_state() -> dict[str, Any]:
    """torch, CUDA, numpy and python RNG states as tensors and plain lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def find_weights(path_or_run_dir: str | Path) -> Path:
    """The weights file meant by a path: a file as is; a run folder's best, else last weights."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        for name in (BEST_WEIGHTS, LAST_WEIGHTS):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"run folder {str(path)!r} holds no {BEST_WEIGHTS} or {LAST_WEIGHTS}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return path
