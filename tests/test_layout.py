"""The layout of design.md §9b: imports point down the layers, never up, never in a circle.

Every ``import autoflow...`` of every module counts, including those under
``TYPE_CHECKING``: a type-only import is still a dependency of the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent / "autoflow"

#: Lowest first. A module may import modules of its own layer or of layers below.
LAYERS: list[set[str]] = [
    {"errors", "models", "config", "templates", "expressions"},
    {"codec"},
    {"context", "draw"},
    {"define"},
    {"nodes"},  # built-in nodes: ordinary @node functions; their I/O comes through af.Context
    {"store"},
    {"engine"},
    {"triggers"},  # schedules, database listeners, webhook verification: start runs via a callback
    {"run"},  # the handle on one run: asks its owner (the client) for everything
    {"client_runs"},  # what the client does with one run (the Run handle's owner), under the client
    {"client_submit"},  # starting runs (execute, execute_many): a run owner too
    {"client"},
    {"notebook", "server"},
    {"cli"},
    {"__init__"},
]

#: Inside ``define/`` imports run one way too, bottom first.
DEFINE_ORDER = [
    "registry",
    "schema",
    "options",
    "node",
    "definition",
    "building",
    "delay",
    "dag",
    "workflow",
    "__init__",
]


def _unit(module: str) -> str:
    """The layer unit of a dotted module name inside autoflow: its package or file."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "autoflow":
                found |= {f"autoflow.{alias.name}" for alias in node.names}
            elif node.module.startswith("autoflow."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("autoflow.")}
    return found


def _modules() -> dict[str, set[str]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        out[".".join(rel.parts)] = _imports(path)
    return out


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"autoflow/{unit} is in no layer of tests/test_layout.py: place it")


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, imports in _modules().items():
        mine = _layer(_unit(module))
        for target in imports:
            if _layer(_unit(target)) > mine:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports running back up:\n" + "\n".join(sorted(upward))


def test_define_imports_run_one_way() -> None:
    upward = []
    for module, imports in _modules().items():
        if not module.startswith("autoflow.define."):
            continue
        mine = DEFINE_ORDER.index(module.split(".")[2])
        for target in imports:
            if target.startswith("autoflow.define.") and DEFINE_ORDER.index(target.split(".")[2]) > mine:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_store_knows_nothing_of_definitions_or_the_engine() -> None:
    for module, imports in _modules().items():
        if module.startswith("autoflow.store."):
            assert not {i for i in imports if _unit(i) in ("define", "engine", "client")}, module


def test_no_module_cycles() -> None:
    graph = nx.DiGraph()
    modules = _modules()
    for module, imports in modules.items():
        for target in imports:
            if target in modules and target != module:
                graph.add_edge(module, target)
    cycles = list(nx.simple_cycles(graph))
    # A package's __init__ re-exports its modules; a module importing a sibling through the
    # package is the only cycle that is harmless, and none exists today.
    assert not cycles, cycles
