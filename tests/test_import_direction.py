"""Imports point down only: tools -> tasks -> heads -> backbones (parsed with ast, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("backbones", "heads", "tasks", "tools")
FORBIDDEN = {
    "backbones": {"heads", "tasks", "tools"},
    "heads": {"tasks", "tools"},
    "tasks": {"tools"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of our packages that ``path`` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in OURS}
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    bad = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files
    }
    bad = {f: names for f, names in bad.items() if names}
    assert not bad, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {bad}"


def test_checker_sees_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nfrom tasks.base import Task\nimport heads.base as hb\nfrom . import x\n"
    )
    assert imported_packages(src) == {"tasks", "heads"}
