"""The package's shape (issue #14): no import cycles, small modules, local imports only for optional dependencies.

The one-way layers themselves are an import-linter ``layers`` contract in ``pyproject.toml``
(run by ``.ci/run`` as ``lint-imports``); this module checks what import-linter does not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = [REPO / "stadv_ref", REPO / "backends"]
MAX_MODULE_LINES = 400
MAX_TEST_LINES = 500
OPTIONAL = {"numba", "llvmlite", "cupy", "cupyx", "cvxpy", "scs", "matplotlib", "torch", "onnx", "dask",
            "distributed"}
"""Top-level packages that may be imported inside a function (optional or heavy dependencies)."""


def _py_files(dirs):
    return sorted(p for d in dirs for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def _lines(path):
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_package_module_over_400_lines():
    big = {str(p.relative_to(REPO)): _lines(p) for p in _py_files(PACKAGE_DIRS) if _lines(p) > MAX_MODULE_LINES}
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_test_module_over_500_lines():
    big = {str(p.relative_to(REPO)): _lines(p) for p in _py_files([REPO / "tests"]) if _lines(p) > MAX_TEST_LINES}
    assert big == {}, f"test modules over {MAX_TEST_LINES} lines: {big}"


def _local_imports(path):
    """``(line, module)`` of every import statement inside a function body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            visit(child, inside)

    visit(tree, False)
    return found


def test_function_local_imports_only_for_optional_dependencies():
    bad = []
    for path in _py_files(PACKAGE_DIRS):
        for line, mod in _local_imports(path):
            if mod.startswith(".") or mod.split(".")[0] not in OPTIONAL:
                bad.append(f"{path.relative_to(REPO)}:{line}: {mod}")
    assert bad == [], "function-local imports of non-optional modules:\n" + "\n".join(bad)


def _cycles(graph, modules):
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            strong(m)
    return out


def test_no_import_cycles_inside_stadv_ref():
    grimp = pytest.importorskip("grimp", reason="grimp comes with the [dev] extra (import-linter)")
    g = grimp.build_graph("stadv_ref")
    modules = set(g.modules)
    edges = {m: set(g.find_modules_directly_imported_by(m)) & modules for m in modules}
    cycles = _cycles(edges, modules)
    assert cycles == [], f"import cycles: {cycles}"


def test_cycle_finder_finds_a_cycle():
    """The checker above is not vacuous: a two-module loop and a self-import are found, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}, {"a", "b", "c"}) == [["a", "b"]]
    assert _cycles({"a": {"a"}}, {"a"}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}, {"a", "b", "c"}) == []


def test_local_import_finder_sees_nested_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    def g():\n        from .x import y\n    import scipy\n")
    assert sorted(m for _, m in _local_imports(src)) == [".x", "scipy"]
