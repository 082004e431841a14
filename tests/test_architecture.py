"""The shape of the code, checked: layers that only point down, short functions and files, and methods that
own everything about themselves (no method's name or files named outside ``lcia.methods``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import builtin_methods

from lcia.methods import build_method

SRC = Path(__file__).resolve().parents[1] / "src" / "lcia"

# Lowest first. A module may import from its own layer and the layers below it.
LAYERS = [
    ["lcia.errors", "lcia.yamlfile", "lcia.core"],
    ["lcia.data", "lcia.scorers", "lcia.benchmarks", "lcia.mechanisms", "lcia.evaluation.metrics",
     "lcia.reporting.tables", "lcia.reporting.figures",
     "lcia.reporting.manifest", "lcia.reporting.loggers"],
    ["lcia.models"],
    ["lcia.methods"],
    ["lcia.config"],
    ["lcia.training", "lcia.evaluation"],
    ["lcia.pipeline", "lcia.reporting"],
    ["lcia.compare", "lcia.sweep", "lcia.integrations", "lcia.serving"],
    ["lcia.api", "lcia.cli", "lcia.__main__", "lcia"],
]  # fmt: skip


def layer_of(module: str) -> int:
    matches = [(len(prefix), level) for level, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def imported_module(module: str, name: str) -> str:
    """``from lcia.reporting import figures`` imports the module lcia.reporting.figures."""
    path = SRC.parent / Path(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if path.with_suffix(".py").exists() or path.is_dir() else module


def runtime_imports(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """(line, imported lcia module) of every import that runs (``if TYPE_CHECKING:`` blocks excluded)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skipped |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lcia"):
            found += [(node.lineno, imported_module(node.module, a.name)) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("lcia")]
    return found


def test_layers_only_point_down():
    upward = []
    for path in sources():
        module = module_name(path)
        for line, imported in runtime_imports(ast.parse(path.read_text()), module):
            if layer_of(imported) > layer_of(module):
                upward.append(f"{path.relative_to(SRC.parent)}:{line} {module} -> {imported}")
    assert upward == []


def test_functions_fit_on_a_screen_and_files_stay_small():
    long = []
    for path in sources():
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []


def method_owned_names() -> set[str]:
    """Every registered method's name and the names of the files it keeps (artifacts, logs)."""
    names = set(builtin_methods()) - {"lcia"}  # the paper's method shares the project's name, which appears everywhere
    for name in builtin_methods():
        names |= set(build_method(name).artifacts())
    return names | {"ema_coefficients", "codebook"}  # logs and artifacts a fresh method does not show yet


def code_strings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, value) of the string constants that code uses: docstrings and help text examples are docs."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", [p for p in sources() if "methods" not in p.relative_to(SRC).parts],
                         ids=lambda p: str(p.relative_to(SRC)))  # fmt: skip
def test_no_file_outside_methods_names_a_method_or_its_files(path):
    names = method_owned_names()
    files = tuple(f"{name}.json" for name in names) + tuple(f"{name}.jsonl" for name in names)
    used = [(line, value) for line, value in code_strings(ast.parse(path.read_text()))
            if value in names or value.endswith(files)]  # fmt: skip
    assert used == []
