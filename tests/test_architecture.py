"""The import contract: vision -> storage -> services -> interfaces, each layer importing only the ones
below it, and no import circle anywhere (issue 10). Read from the source, so it also covers imports made
inside functions; imports under ``if TYPE_CHECKING:`` are type hints only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import facefinder

ROOT = Path(facefinder.__file__).resolve().parent
LAYERS = ("vision", "storage", "services", "interfaces")
BASE = ("facefinder.errors", "facefinder.config")  # below every layer; they import none of facefinder


def module_name(path: Path) -> str:
    return ".".join(("facefinder", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def runtime_imports(path: Path) -> set[str]:
    """The facefinder modules ``path`` imports when it runs (``from pkg import submodule`` is the submodule)."""
    tree = ast.parse(path.read_text())
    hints = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facefinder"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= submodules or ({node.module} & MODULES.keys())
    return found - {module_name(path)}


GRAPH = {name: runtime_imports(path) for name, path in MODULES.items()}


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_layer_imports_a_layer_above_it():
    upward = sorted(
        (name, target)
        for name, targets in GRAPH.items()
        for target in targets
        if layer(name) is not None and layer(target) is not None and layer(target) > layer(name)
    )
    assert upward == []


def test_base_modules_import_no_layer():
    assert {name: GRAPH[name] for name in BASE if GRAPH[name]} == {}


def test_no_import_circle():
    circles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circles.append(path[path.index(name) :] + [name])
            return
        if name in done:
            return
        for target in sorted(GRAPH[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])
    assert circles == []


# No interface holds a database row or opens the catalog itself: services hand them dataclasses
# (UserInfo, CaseRecord, Lead...) and open the catalog for them (services/catalog_access.py).
ROW_MODULES = ("facefinder.storage.catalog", "sqlalchemy")
# http/app.py maps sqlalchemy's DataError (a value the database refused) onto a 400; it is to go once
# that error reaches the interfaces under a services-level name.
ROW_IMPORTS_LEFT = {
    ("facefinder.interfaces.http.app", "sqlalchemy.exc"),
    ("facefinder.interfaces.http.app", "sqlalchemy.exc.DataError"),
}


def every_import(tree: ast.AST) -> set[str]:
    """Every module a source imports, type hints included (``from pkg import name`` counts as pkg and pkg.name)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def imports_rows(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in ROW_MODULES)


def test_interfaces_import_no_catalog_rows():
    found = {
        (name, target)
        for name, path in MODULES.items()
        if layer(name) == LAYERS.index("interfaces")
        for target in every_import(ast.parse(path.read_text()))
        if imports_rows(target)
    }
    assert found - ROW_IMPORTS_LEFT == set()


def test_the_row_rule_sees_the_imports():
    """A guard against a rule that checks nothing: type hints, submodules and imports in functions count."""

    def flagged(source: str) -> set[str]:
        return {target for target in every_import(ast.parse(source)) if imports_rows(target)}

    assert flagged("if TYPE_CHECKING:\n    from facefinder.storage.catalog import User\n") == {
        "facefinder.storage.catalog",
        "facefinder.storage.catalog.User",
    }
    assert flagged("def f():\n    from facefinder.storage import catalog, store\n") == {"facefinder.storage.catalog"}
    assert flagged("import sqlalchemy.orm\nfrom sqlalchemy import select\n") == {
        "sqlalchemy.orm",
        "sqlalchemy",
        "sqlalchemy.select",
    }
    assert flagged("from facefinder.services.audit import AuditLog\nimport facefinder.storage.catalogue\n") == set()


def test_the_contract_sees_the_imports():
    """A guard against a contract that checks nothing: known edges are found."""
    assert "facefinder.storage.catalog" in GRAPH["facefinder.storage.store"]
    assert "facefinder.interfaces.cli.common" in GRAPH["facefinder.interfaces.cli.photos"]
    assert "facefinder.services.privacy.service" in GRAPH["facefinder.services.engine"]  # imported inside a function
    assert layer("facefinder.interfaces.http.app") == 3 and layer("facefinder.vision.detect") == 0


# ----- room sizes: small files, short functions ---------------------------------------------------------
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_no_source_file_is_over_500_lines():
    """A file past this does more than one thing: split it by concern (issue 10)."""
    long = {
        str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_is_over_60_lines():
    """Long functions hide steps that deserve a name (the whole body, decorators and signature included)."""
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    assert long == {}
