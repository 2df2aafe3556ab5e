"""The registry: stable keys for node functions and workflow names.

A worker on another machine finds a node's function by its key (``module:qualname`` or
an explicit ``type=``/``name=``) after importing the same module. Redefining a node in
the same module (a re-run notebook cell) replaces it; two modules claiming one key is an
error that says how to fix it.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, Protocol, TypeVar

from autoflow.errors import NotFoundError, WorkflowError

__all__ = ["Registry", "builtin_registry", "default_registry"]


class _Keyed(Protocol):
    """What the registry reads of a node (``autoflow.define.node.Node``)."""

    key: str
    module: str
    qualname: str


class _Named(Protocol):
    """What the registry reads of a workflow (``autoflow.define.workflow.Workflow``)."""

    name: str
    module: str


N = TypeVar("N", bound=_Keyed)
W = TypeVar("W", bound=_Named)


class Registry(Generic[N, W]):
    """Node functions by key and workflows by name. (It holds ``af.Node`` and
    ``af.Workflow`` objects; it is generic only so that this module imports neither.)

    Example::

        reg = af.Registry()

        @af.node(registry=reg)
        def ping() -> str:
            return "pong"

        reg.node(ping.key) is ping   # True
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, N] = {}
        self._workflows: dict[str, W] = {}

    def add_node(self, node: N) -> None:
        if self is not _builtins and _builtins.has_node(node.key):
            raise WorkflowError(
                f"node key {node.key!r} is the type of a built-in node, which JSON definitions resolve first; "
                f"give {node.module}.{node.qualname} another key with @af.node(name=...) or @af.node(type=...)"
            )
        with self._lock:
            old = self._nodes.get(node.key)
            if old is not None and old.module != node.module:
                raise WorkflowError(
                    f"node key {node.key!r} is already used by {old.module}.{old.qualname}; "
                    f"give {node.module}.{node.qualname} another key with "
                    f"@af.node(name=...) or @af.node(type=...)"
                )
            self._nodes[node.key] = node

    def add_workflow(self, workflow: W) -> None:
        with self._lock:
            old = self._workflows.get(workflow.name)
            if old is not None and old.module != workflow.module:
                raise WorkflowError(
                    f"workflow name {workflow.name!r} is already used by module {old.module}; "
                    f"rename one with @af.workflow(name=...)"
                )
            self._workflows[workflow.name] = workflow

    def node(self, key: str) -> N:
        """The node registered under ``key``; NotFoundError says how to make it known."""
        try:
            return self._nodes[key]
        except KeyError:
            module = key.split(":", 1)[0] if ":" in key else None
            hint = (
                f"start the worker with the module that defines it (autoflow worker {module})"
                if module and module != "__main__"
                else "import the module that defines it before running the workflow"
            )
            raise NotFoundError(f"node type {key!r} is not registered here; {hint}") from None

    def workflow(self, name: str) -> W:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise NotFoundError(
                f"no workflow named {name!r} is registered (known: {known}); import the module that defines it"
            ) from None

    def has_node(self, key: str) -> bool:
        return key in self._nodes

    @property
    def workflows(self) -> dict[str, W]:
        with self._lock:
            return dict(self._workflows)

    @property
    def nodes(self) -> dict[str, N]:
        with self._lock:
            return dict(self._nodes)


_default: Registry[Any, Any] | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry[Any, Any]:
    """The registry decorators use when none is given (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default


_builtins: Registry[Any, Any] = Registry()


def builtin_registry() -> Registry[Any, Any]:
    """The nodes every worker knows without importing user code (``af.delay`` and the
    node library), registered with ``@af.node(type="...", registry=builtin_registry())``.
    Node types resolve here first, then in the user's registry."""
    return _builtins
