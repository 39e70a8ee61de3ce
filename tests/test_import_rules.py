"""The import rules of docs/architecture.md, read from the source: which package may import which, and no circles.

Direction rules count every import, lazy ones inside functions too, so a rule cannot be dodged by moving an import
into a function. Circles count every import but those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("protocol", "broker", "turn_service", "fleet_service", "agent", "simulator", "fleet_cli", "dashboard")
WEB_AND_DATABASE = {"fastapi", "starlette", "uvicorn", "sqlmodel", "sqlalchemy", "alembic", "psycopg", "amqtt"}
SERVICE_EDGES = ("fleet_service.api", "fleet_service.cli", "fleet_service.app", "fleet_service.runtime")


def modules() -> Iterator[tuple[str, Path]]:
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                parts = path.relative_to(ROOT).with_suffix("").parts
                yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _type_checking_only(node: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for branch in ast.walk(node):
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test):
            skipped |= {id(n) for statement in branch.body for n in ast.walk(statement)}
    return skipped


def imports_of(module: str, path: Path, *, runtime_only: bool = False) -> list[str]:
    """Every module name this module imports (`from a import b` gives `a` and `a.b`), relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree) if runtime_only else set()
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def broken(package: str, allowed: Callable[[str, str], bool]) -> list[str]:
    return sorted(
        {
            f"{module} imports {name}"
            for module, path in modules()
            if module.split(".")[0] == package
            for name in imports_of(module, path)
            if not allowed(module, name)
        }
    )


def top(name: str) -> str:
    return name.split(".")[0]


def test_protocol_is_the_leaf():
    assert broken("protocol", lambda _m, name: top(name) in sys.stdlib_module_names | {"pydantic", "protocol"}) == []


@pytest.mark.parametrize(("package", "also_forbidden"), [("agent", {"simulator"}), ("simulator", {"agent"})])
def test_clients_of_the_protocol_never_import_the_service(package, also_forbidden):
    forbidden = WEB_AND_DATABASE | {"fleet_service", "broker", "turn_service"} | also_forbidden
    assert broken(package, lambda _m, name: top(name) not in forbidden) == []


@pytest.mark.parametrize("package", ["broker", "turn_service"])
def test_the_broker_and_turn_never_import_the_service_or_the_units(package):
    assert broken(package, lambda _m, name: top(name) not in {"fleet_service", "agent", "simulator"}) == []


@pytest.mark.parametrize("package", [p for p in OURS if p not in ("fleet_service", "fleet_cli")])
def test_only_the_command_line_imports_the_service(package):
    assert broken(package, lambda _m, name: top(name) != "fleet_service") == []


def test_inside_the_service_only_the_edges_reach_the_api_the_cli_and_the_context():
    def allowed(module: str, name: str) -> bool:
        if module.startswith(SERVICE_EDGES):
            return True
        if name.startswith(SERVICE_EDGES):
            return False
        return module == "fleet_service.context" or not name.startswith("fleet_service.context")

    assert broken("fleet_service", allowed) == []


def test_no_import_circles():
    known = dict(modules())
    graph = {
        m: sorted({n for n in imports_of(m, p, runtime_only=True) if n in known and n != m}) for m, p in known.items()
    }
    assert _circles(graph) == []


def _circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found
