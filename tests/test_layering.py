"""Layers import downward only, and collectives live only in eigenmap/dist.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_eigenmap_never_imports_launch():
    for path in (ROOT / "eigenmap").rglob("*.py"):
        assert "launch" not in _top(_imports(path)), path


def test_retrieval_never_imports_eigenmap_or_launch():
    for path in (ROOT / "retrieval").rglob("*.py"):
        assert not {"eigenmap", "launch"} & _top(_imports(path)), path


def test_collectives_are_called_only_in_eigenmap_dist():
    calls = ("all_reduce(", "all_gather(", "broadcast(", "all_gather_into_tensor(", "reduce_scatter(")
    for pkg in ("eigenmap", "launch", "retrieval"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path == ROOT / "eigenmap" / "dist.py":
                continue
            text = path.read_text()
            used = [c for c in calls if f"dist.{c}" in text or f"distributed.{c}" in text]
            assert not used, f"{path.relative_to(ROOT)} calls {used}: move it to eigenmap/dist.py"
