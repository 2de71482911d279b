"""The run folder's logs: ``metrics.jsonl`` rows, TensorBoard events and console lines.

Only rank 0 writes (``enabled=False`` on other ranks makes every method a no-op). Rows are
appended, so a resumed run continues the same files.

metrics.jsonl rows::

    {"kind": "train", "step": 40, "epoch": 1, "lr": 0.09, "loss": 1.2, ..., "elapsed_s": 3.1}
    {"kind": "eval", "step": 80, "epoch": 2, "accuracy": 0.71, ..., "elapsed_s": 6.0}
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tasks.checkpoint import atomic_write_text

METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"
TB_DIR = "tb"


def jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts as JSON-friendly values (tensors -> float or list)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The plain numeric entries of a row (what TensorBoard and plots can draw)."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")
    }


class RunLogger:
    """Writes metrics rows; ``quiet`` silences console lines (files are always written)."""

    def __init__(self, run_dir: Path, *, enabled: bool, quiet: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.quiet = quiet or not enabled
        self._jsonl = open(run_dir / METRICS_JSONL, "a") if enabled else None  # noqa: SIM115
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: rank 0 only

            self._tb = SummaryWriter(str(run_dir / TB_DIR))

    @property
    def show_progress(self) -> bool:
        """A live progress bar only for a person watching a terminal."""
        return not self.quiet and sys.stdout.isatty()

    def log_row(self, kind: str, row: dict[str, Any]) -> None:
        """One metrics.jsonl row; numeric values also go to TensorBoard as ``kind/name``."""
        if self._jsonl is None:
            return
        self._jsonl.write(json.dumps({"kind": kind, **jsonable(row)}) + "\n")
        self._jsonl.flush()
        self.log_scalars(int(row["step"]), {f"{kind}/{k}": v for k, v in scalars(row).items()})

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars only (for hooks with their own series)."""
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, step)

    def print(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if self.enabled:
            atomic_write_text(self.run_dir / name, json.dumps(jsonable(data), indent=2) + "\n")

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """All rows of a run's metrics.jsonl (empty when there is none)."""
    path = run_dir / METRICS_JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
