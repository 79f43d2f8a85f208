"""The folders are the layers: each imports only the layers below it, and no module
import cycle exists. Read from the source (ast), so a new import that breaks a rule
fails here, not in review.

    engine.core      the pure core: no I/O library, nothing else of the project
    shards           the SQL adapters (Postgres, MariaDB): engine.core only
    engine.kafka     Kafka adapters: engine.core only
    engine.worker    the worker: engine.core and engine.kafka (cups through the protocol)
    engine.admin, engine.service, engine.cli   wiring: the product, never its tools
    deploy, loadtest the tools: anything; nothing of the product imports them
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("engine", "shards", "deploy", "loadtest")
LAYERS: Final = (
    ("engine.core", ("engine.core",)),
    ("shards", ("engine.core", "shards")),
    ("engine.kafka", ("engine.core", "engine.kafka")),
    ("engine.worker", ("engine.core", "engine.kafka", "engine.worker")),
    ("engine.admin", ("engine.core", "engine.kafka", "engine.admin", "shards")),
    ("engine.service", ("engine.core", "engine.kafka", "engine.worker", "shards")),
    ("engine.cli", ("engine",)),
    ("deploy", PACKAGES),
    ("loadtest", PACKAGES),
)
"""(module prefix, the project prefixes it may import), the first matching prefix wins."""
IO_LIBRARIES: Final = (
    "asyncio",
    "aiokafka",
    "asyncpg",
    "asyncmy",
    "uvloop",
    "prometheus_client",
    "socket",
)
"""What the core may not import: it decides, the layers above do the I/O."""


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES: Final = _modules()


def _imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    """The modules ``path`` imports (a ``from package import module`` names the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in MODULES else node.module


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _allowed(module: str) -> tuple[str, ...]:
    for prefix, allowed in LAYERS:
        if _within(module, prefix):
            return allowed
    return ()


def test_every_project_module_has_a_layer() -> None:
    homeless = [m for m in MODULES if m not in PACKAGES and not _allowed(m)]
    assert not homeless, f"modules outside every layer: {homeless}"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, path in MODULES.items():
        allowed = _allowed(module)
        for imported in _imports(path, top_level_only=False):
            project = imported.split(".")[0] in PACKAGES
            if project and not any(_within(imported, prefix) for prefix in allowed):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_no_io_library() -> None:
    wrong = [
        f"{module} imports {imported}"
        for module, path in MODULES.items()
        if _within(module, "engine.core")
        for imported in _imports(path, top_level_only=False)
        if imported.split(".")[0] in IO_LIBRARIES
    ]
    assert not wrong, wrong


def test_no_module_import_cycle() -> None:
    graph = {
        module: {i for i in _imports(path, top_level_only=True) if i in MODULES}
        for module, path in MODULES.items()
    }
    cycles = _cycles(graph)
    assert not cycles, cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root, edges_of_root in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges_of_root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            edge = next(edges, None)
            if edge is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
            elif edge not in index:
                index[edge] = low[edge] = len(index)
                stack.append(edge)
                on_stack.add(edge)
                work.append((edge, iter(sorted(graph[edge]))))
            elif edge in on_stack:
                low[node] = min(low[node], index[edge])
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
