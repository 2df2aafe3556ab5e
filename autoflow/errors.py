"""The autoflow error tree.

Every error autoflow raises on purpose is an :class:`AutoflowError`::

    AutoflowError
    ├── WorkflowError (ValueError)     a definition is wrong: cycle, wiring, types, registry
    │   └── NotFoundError (LookupError) an unknown workflow name, run id or node type
    ├── InputError (ValueError)         bad workflow inputs, refused before anything is queued
    ├── OutputError (TypeError)         a node returned something that is not JSON-serialisable
    ├── NodeCancelled                   raised inside a node by ``ctx.check_cancelled()``
    ├── RunFailed                       ``run.result()`` of a failed run (node id, type, traceback)
    ├── RunCancelled                    ``run.result()`` of a cancelled run
    ├── RunTimeout (TimeoutError)       ``run.wait(timeout=...)`` ran out of time
    ├── ConfigError (ValueError)        a setting (environment variable) is invalid; names it
    ├── BackendError (ConnectionError)  the store or queue is unreachable (names the URL)
    └── ConflictError                   a stored workflow changed meanwhile (expected version)

Validation errors also subclass ``ValueError``/``TypeError`` so that code written
against the standard library keeps working.
"""

from __future__ import annotations

__all__ = [
    "AutoflowError",
    "BackendError",
    "ConfigError",
    "ConflictError",
    "InputError",
    "NodeCancelled",
    "NotFoundError",
    "OutputError",
    "RunCancelled",
    "RunFailed",
    "RunTimeout",
    "WorkflowError",
]


class AutoflowError(Exception):
    """Root of every error autoflow raises on purpose."""


class WorkflowError(AutoflowError, ValueError):
    """A workflow or node definition is invalid (cycle, wiring, types, registry clash)."""


class NotFoundError(WorkflowError, LookupError):
    """An unknown workflow name, run id or node type."""


class InputError(AutoflowError, ValueError):
    """Workflow inputs are missing, unknown or of the wrong type.

    Raised by ``Client.execute`` before anything is stored or queued.
    """


class OutputError(AutoflowError, TypeError):
    """A node returned a value that cannot be stored as JSON."""


class NodeCancelled(AutoflowError):
    """Raised inside a node when its run was cancelled (``ctx.check_cancelled()``)."""


class RunFailed(AutoflowError):
    """A run ended ``failed``; carries the failing node and its original error.

    Example::

        try:
            run.result()
        except af.RunFailed as exc:
            print(exc.node_id, exc.error_type, exc.traceback)
    """

    def __init__(
        self,
        run_id: str,
        node_id: str | None,
        error_type: str,
        message: str,
        traceback: str = "",
    ) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        where = f"node {node_id!r}" if node_id else "the run"
        super().__init__(f"run {run_id} failed in {where}: {error_type}: {message}")


class RunCancelled(AutoflowError):
    """A run ended ``cancelled`` before producing its output."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was cancelled")


class RunTimeout(AutoflowError, TimeoutError):
    """Waiting for a run took longer than the caller allowed; the run goes on."""

    def __init__(self, run_id: str, timeout: float) -> None:
        self.run_id = run_id
        self.timeout = timeout
        super().__init__(f"run {run_id} did not finish within {timeout:g}s (it keeps running)")


class ConfigError(AutoflowError, ValueError):
    """A setting is invalid (``af.Settings`` or the environment); names the variable."""


class BackendError(AutoflowError, ConnectionError):
    """The store or the queue cannot be reached or answered wrongly; names the URL."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"backend {url} is not usable: {reason}")


class ConflictError(AutoflowError):
    """A stored workflow is not at the version the caller expected (it was created or
    changed meanwhile); nothing was saved."""
