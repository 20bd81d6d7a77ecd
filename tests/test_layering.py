"""The layering the architecture promises, read from the source: CLI -> API -> services ->
store / models / data; no import cycles; all SQL in embedstore/store/ (and embedstore/sql/*.sql)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "embedstore"
SERVICES = {"analyses", "encode", "encode_ray", "query", "transfer", "finetune", "explain", "reports", "demo"}


def _unit(module: str) -> str:
    """embedstore.analyses.metrics -> analyses; embedstore.api -> api; embedstore -> embedstore."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[Path, set[str]]:
    """Every embedstore module each file imports, lazily inside functions too."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("embedstore"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("embedstore"))
        out[path] = found
    return out


def _unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "embedstore"


def _graph() -> dict[str, set[str]]:
    units = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    graph: dict[str, set[str]] = {}
    for path, modules in _imports().items():
        src = _unit_of(path)
        targets = {_unit(m) for m in modules} & (units | {"embedstore"})
        graph.setdefault(src, set()).update(t for t in targets if t != src)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_of_the_package_folders_has_no_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cli_imports_the_api_and_nothing_below_it():
    allowed = {"cli", "api", "errors", "embedstore", "provenance"}
    for path, modules in _imports().items():
        if _unit_of(path) == "cli":
            below = sorted(m for m in modules if _unit(m) not in allowed)
            assert not below, f"{path.name} imports {below}"


def test_nothing_below_the_api_imports_it():
    for path, modules in _imports().items():
        if _unit_of(path) not in ("cli", "api", "embedstore"):
            assert not [m for m in modules if _unit(m) == "api"], f"{path.relative_to(PACKAGE)} imports the API"


def test_store_and_models_import_no_service_and_the_store_no_model():
    for path, modules in _imports().items():
        unit = _unit_of(path)
        if unit in ("store", "models", "data"):
            services = sorted(m for m in modules if _unit(m) in SERVICES)
            assert not services, f"{path.relative_to(PACKAGE)} imports the services {services}"
        if unit in ("store", "data"):
            assert not [m for m in modules if _unit(m) == "models"], f"{path.relative_to(PACKAGE)} imports models"
            assert "import torch" not in path.read_text(), f"{path.relative_to(PACKAGE)} imports torch"


SQL_CALL = re.compile(r"\b(con|conn|connection|db|cur|cursor)\.(execute|executemany|sql|query)\(|duckdb\.connect\(")


def test_no_module_outside_the_store_runs_sql():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.relative_to(PACKAGE).parts[0] != "store" and SQL_CALL.search(p.read_text())]
    assert not offenders, f"SQL run outside embedstore/store/: {offenders}"
