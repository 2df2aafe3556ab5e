"""What every library node shares: its registration, its error type, optional imports.

Library nodes are ordinary ``@af.node`` functions registered in
:func:`~autoflow.define.registry.builtin_registry` under the seed's type names, so a JSON
definition naming ``http_request`` runs on any worker without importing user code.
Retries, timeouts, logs and cancellation are the engine's (``engine/executor.py``, retry
decisions in ``engine/failures.py``); a node only tells it, through :class:`NodeError`,
whether a retry can help and how long to wait first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from autoflow.define.node import Node, NodeOptions, current_builder
from autoflow.define.registry import builtin_registry
from autoflow.errors import AutoflowError

__all__ = ["LibraryNode", "MissingExtra", "NodeError", "builtin", "optional_import"]


class NodeError(AutoflowError):
    """A library node failed; the engine reads whether retrying can help.

    ``retryable=False`` fails the node at once (a 5xx SMTP reply, a declined card, a
    WhatsApp template error); ``retry_after`` makes the next attempt wait at least that many
    seconds (HTTP ``Retry-After``). ``status_code`` (HTTP) and ``code`` (the provider's
    error code) are what a node's ``retry_on=`` option matches besides type names.

    Example::

        raise NodeError("SMTP 550: no such user", retryable=False, code="550")
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        status_code: int | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code
        self.code = code


class MissingExtra(AutoflowError, ImportError):
    """An optional library a node needs is not installed (names the extra to install)."""


def optional_import(module: str, extra: str, node_type: str) -> ModuleType:
    """Import ``module`` when a node first needs it, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"node type {node_type!r} needs {module!r}: pip install 'autoflow[{extra}]'") from None


class LibraryNode(Node[Any, Any]):
    """A library node. Called outside a workflow (a notebook cell, a unit test) it checks
    and converts its arguments as the engine does, so ``http_request(url, auth={...})``
    works with plain dicts."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_builder.get() is not None:
            return super().__call__(*args, **kwargs)
        ctx = kwargs.pop(self.ctx_param, None) if self.ctx_param else None
        values = self.validate_inputs(self.bind(args, kwargs))
        return self.invoke(values, ctx)

    def with_options(self, **changes: Any) -> LibraryNode:
        """A copy with some options changed (still a library node)."""
        copy = super().with_options(**changes)
        made = LibraryNode(copy.fn, copy.options)
        made.key = self.key
        return made


def builtin(node_type: str, **options: Any) -> Callable[[Callable[..., Any]], Node[Any, Any]]:
    """``@builtin("http_request", retries=2)``: a library node registered under its seed name."""

    def decorate(fn: Callable[..., Any]) -> Node[Any, Any]:
        made = LibraryNode(fn, NodeOptions(type=node_type, **options))
        builtin_registry().add_node(made)
        return made

    return decorate
