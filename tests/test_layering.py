"""Layers import downward only, eigenmap/ has no import cycle, collectives live only in eigenmap/dist.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


# ------------------------------------------------------------------------------------------
# No import cycles inside eigenmap/, and none dodged by importing inside a function
# ------------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.AST, importer: str, is_package: bool, modules: set[str]) -> set[str]:
    """The eigenmap modules an import statement loads: the module named, its packages (their
    __init__ runs first) and, for ``from pkg import name``, the submodule ``pkg.name``."""
    if isinstance(node, ast.Import):
        named = [a.name for a in node.names]
    else:
        module = _resolve(node, importer, is_package)
        named = [module] + [f"{module}.{a.name}" for a in node.names]
    out = set()
    for name in named:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    # a module's own packages are already being initialised when it runs
    ancestors = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
    return (out & modules) - ancestors - {importer}


def _import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level imports, imports inside functions) between eigenmap modules."""
    files = {_module_name(p): p for p in (ROOT / "eigenmap").rglob("*.py")}
    modules = set(files)
    top: dict[str, set[str]] = {m: set() for m in modules}
    inner: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        package = path.name == "__init__.py"
        in_function = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (inner if id(node) in in_function else top)[name] |= _targets(node, name, package, modules)
    return top, inner


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def test_eigenmap_has_no_import_cycle_at_module_level():
    top, _ = _import_graph()
    cycles = [(a, b) for a in top for b in top[a] if _reaches(top, b, a)]
    assert not cycles, f"module-level import cycles through: {cycles}"


def test_no_eigenmap_module_imports_inside_a_function_to_dodge_a_cycle():
    """An import inside a function is fine for a heavy optional package; for an eigenmap module
    it must not be one that would close a cycle if it were at the top of the file."""
    top, inner = _import_graph()
    dodges = [(m, t) for m, targets in inner.items() for t in targets if _reaches(top, t, m)]
    assert not dodges, f"imports inside functions that dodge a cycle (importer, imported): {dodges}"


@pytest.mark.parametrize("first,second", [("eigenmap.losses", "eigenmap.models"),
                                          ("eigenmap.models", "eigenmap.losses")])
def test_losses_and_models_import_in_either_order_in_a_fresh_interpreter(first, second):
    code = f"import {first}, {second}; print({second}.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == second
