"""The resvision arm of the accuracy benchmarks: ``tools/train.py`` run as a user runs it.

Each benchmark trains resvision in a subprocess with a recipe from ``configs/`` and reads the
run folder back, so the figure it records is what the command line gives, not a shortcut.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_tool(task: str, config: str, out: Path, overrides: list[str]) -> dict:
    """Runs ``tools/train.py --task TASK --config configs/TASK/CONFIG --out OUT overrides...``
    and returns the run's ``metrics.json`` (final validation metrics)."""
    cmd = [
        sys.executable, str(ROOT / "tools" / "train.py"), "--task", task,
        "--config", str(ROOT / "configs" / task / config), "--out", str(out), *overrides,
    ]  # fmt: skip
    print("resvision:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def eval_curve(out: Path, metric: str) -> list[tuple[float, float]]:
    """``[(elapsed seconds, metric)]`` of every evaluation row in the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["elapsed_s"], r[metric]) for r in rows if r.get("kind") == "eval"]
