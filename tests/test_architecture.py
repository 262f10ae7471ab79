"""The house rules, read off the source: imports point down, modules and functions stay readable.

Parsed with :mod:`ast`, nothing is imported. The layers (``runs -> book -> train/oracle ->
ops/optim/data -> core/validate/fileio``) are a table below; a module that imports a layer its
own layer may not see fails with the module, the line and the import. The public face
(``jaxscratch/__init__.py``) and ``__main__`` sit above everything and are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxscratch"

BASE = {"core", "validate", "fileio"}
# layer -> the layers (besides itself) it may import
ALLOWED: dict[str, set[str]] = {
    "core": {"validate"},
    "validate": set(),
    "fileio": set(),
    "ops": BASE,
    "optim": BASE,
    "data": BASE,
    "train": BASE | {"ops", "optim"},
    "oracle": BASE | {"ops"},
    "book": BASE | {"ops", "optim", "data", "train", "oracle"},
    "runs": BASE | {"ops", "optim", "data", "train", "book", "oracle"},
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # code lines, docstring and blank lines not counted
# functions whose length the math needs, each with the reason
LONG_FUNCTIONS: dict[str, str] = {}


def _modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if p.name != "__main__.py")


def _layer(path: Path, package: Path = PACKAGE) -> str | None:
    rel = path.relative_to(package)
    if rel == Path("__init__.py"):
        return None  # the public face
    return rel.parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jaxscratch":
                found += [(node.lineno, f"jaxscratch.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "jaxscratch"]


def import_violations(package: Path = PACKAGE) -> list[str]:
    """Every import of a layer that the importing module's layer may not see."""
    bad = []
    for path in _modules(package):
        layer = _layer(path, package)
        if layer is None:
            continue
        if layer not in ALLOWED:
            bad.append(f"{path.relative_to(package.parent)}: not in any layer of ALLOWED")
            continue
        for line, name in _imports(ast.parse(path.read_text())):
            parts = name.split(".")
            if len(parts) == 1:
                bad.append(f"{path.relative_to(package.parent)}:{line}: imports the face {name}")
                continue
            target = parts[1]
            if target != layer and target not in ALLOWED[layer]:
                bad.append(
                    f"{path.relative_to(package.parent)}:{line}: {layer} imports {name} "
                    f"(layer {target}; {layer} may import {sorted(ALLOWED[layer]) or 'nothing'})"
                )
    return bad


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, source: list[str]) -> int:
    skip: set[int] = set()
    for node in ast.walk(fn):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = range(fn.lineno, fn.end_lineno + 1)
    return sum(1 for i in lines if i not in skip and source[i - 1].strip())


def long_functions() -> list[str]:
    """``module:function (N lines)`` for every top-level or method function over the limit."""
    bad = []
    for path in _modules():
        text = path.read_text()
        source = text.splitlines()
        tree = ast.parse(text)
        nodes = [n for n in tree.body]
        nodes += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body]
        for fn in nodes:
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = f"{path.relative_to(PACKAGE.parent)}:{fn.name}"
            n = _code_lines(fn, source)
            if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                bad.append(f"{name} ({n} lines)")
    return bad


def long_modules() -> list[str]:
    return [
        f"{p.relative_to(PACKAGE.parent)} ({n} lines)"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]


def test_imports_point_down():
    bad = import_violations()
    print("\n".join(["import direction:", *(bad or ["no module imports upward"])]))
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_modules_are_short():
    bad = long_modules()
    assert not bad, f"library modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(bad)


def test_functions_are_short():
    bad = long_functions()
    assert not bad, f"functions over {MAX_FUNCTION_LINES} code lines:\n" + "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rule can fail: a core module that imports the runs layer is reported."""
    pkg = tmp_path / "jaxscratch"
    (pkg / "runs").mkdir(parents=True)
    (pkg / "core.py").write_text("from jaxscratch.runs import cli\nimport jaxscratch.ops.dense\n")
    (pkg / "ops").mkdir()
    (pkg / "ops" / "dense.py").write_text("from jaxscratch.core import Op\n")
    bad = import_violations(pkg)
    assert len(bad) == 2 and "core imports jaxscratch.runs" in bad[0], bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_exists(layer):
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file(), layer
