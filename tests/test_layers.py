"""The package's layers: what each import pulls in, and no import cycles among Rolegate modules.

The engine is usable without the web and the database; `import rolegate` costs nothing; the
store imports nothing above it; and the modules form no cycle, counting imports inside functions
(only `if TYPE_CHECKING:` blocks are left out: they never run).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "service"
HEAVY = ("flask", "sqlalchemy", "jwt", "werkzeug", "alembic", "psycopg")


def loaded_after(statement: str) -> set[str]:
    """Top-level module names in `sys.modules` after running `statement` in a fresh interpreter."""
    script = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def module_name(path: Path) -> str:
    parts = ["rolegate", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE_DIR.rglob("*.py"))
    if "migrations" not in path.relative_to(PACKAGE_DIR).parts
}
ENGINE_MODULES = sorted(name for name in MODULES if name.split(".")[:2] == ["rolegate", "engine"])


def test_the_engine_imports_neither_web_nor_sql():
    loaded = loaded_after("\n".join(f"import {name}" for name in ENGINE_MODULES))
    assert {name.partition(".")[0] for name in loaded} & set(HEAVY) == set()


def test_importing_the_package_loads_nothing_else():
    loaded = loaded_after("import rolegate")
    assert {name for name in loaded if name.startswith("rolegate")} == {"rolegate"}
    assert {name.partition(".")[0] for name in loaded} & {*HEAVY, "casbin", "click"} == set()


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The Rolegate modules an import statement runs (a submodule's packages run first)."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        if node.level:
            is_package = MODULES[module].name == "__init__.py"
            base = module.split(".")[: None if is_package else -1]
            base = base[: len(base) - node.level + 1]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        submodules = {f"{prefix}.{alias.name}" for alias in node.names} & MODULES.keys()
        named = submodules | ({prefix} if len(submodules) < len(node.names) else set())
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    named &= MODULES.keys()
    targets = set(named)  # a name taken from the own package counts: `from . import X`
    for name in named:
        parts = name.split(".")
        targets |= {".".join(parts[:i]) for i in range(2, len(parts))} - own_packages
    return targets - {module}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = set().union(*(_targets(module, node) for node in _runtime_imports(tree)))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_relative_function_level_and_package_imports():
    graph = import_graph()
    assert "rolegate.store.db" in graph["rolegate.store.policies"]  # from .db import ...
    assert "rolegate.store" in graph["rolegate.subject_attributes"]  # runs store/__init__
    assert "rolegate.store" not in graph["rolegate.store.policies"]  # its own package
    from_own_package = ast.parse("from . import BLUEPRINTS").body[0]
    assert _targets("rolegate.api.openapi", from_own_package) == {"rolegate.api"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_rolegate_modules():
    graph = import_graph()
    described = [
        {module: sorted(graph[module] & set(cycle)) for module in cycle} for cycle in cycles(graph)
    ]
    assert described == []


STORE_MAY_IMPORT = {"rolegate.errors", "rolegate.rules"}


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("rolegate.store")))
def test_the_store_imports_nothing_above_it(module):
    above = {
        target
        for target in import_graph()[module]
        if not target.startswith("rolegate.store") and target not in STORE_MAY_IMPORT
    }
    assert above == set()


def test_logs_and_metrics_do_not_import_flask():
    loaded = loaded_after("import rolegate.logs, rolegate.metrics")
    assert "flask" not in loaded


FLASK_HOOKS = {"before_request", "after_request", "teardown_request", "before_app_request"}
FLASK_HOOKS |= {"after_app_request", "teardown_app_request"}


def test_request_hooks_are_registered_in_the_api_package_only():
    # rolegate.flask is the extension for other apps (it guards their routes).
    registering = {
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr in FLASK_HOOKS
    }
    assert registering - {"rolegate.flask"} == {"rolegate.api.hooks"}


def test_tables_are_created_by_the_migrations_only():
    creating = {
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "create_all")
            or any(keyword.arg == "checkfirst" for keyword in node.keywords)
        )
    }
    assert creating == set()


def test_every_table_is_declared_in_the_store_schema_module():
    declaring = {
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {"sa.Table", "Table"}
    }
    assert declaring == {"rolegate.store.db"}
