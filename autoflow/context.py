"""The :class:`Context` injected into nodes that ask for it, and its run logger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from autoflow import codec
from autoflow.errors import NodeCancelled, OutputError
from autoflow.models import LogLevel

__all__ = ["Context", "Defer", "LogBuffer", "RunLogger"]

_py_logger = logging.getLogger("autoflow.run")
MAX_MESSAGE_CHARS = 8_000  # of one log message; the rest is cut with a note
MAX_DATA_CHARS = 64_000  # of one log line's data once JSON
_PY_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


class Defer(Exception):
    """Raised by a node to be run again at ``until`` (unix seconds) without holding a
    worker meanwhile; the engine parks it in the queue's schedule. Used by ``af.delay``."""

    def __init__(self, until: float) -> None:
        super().__init__(f"deferred until {until}")
        self.until = until


class LogBuffer:
    """Thread-safe buffer of pending log records (plain dicts) until the store takes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(record)

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            items, self._items = self._items, []
        return items


def log_record(
    level: LogLevel,
    message: str,
    node_id: str | None = None,
    data: dict[str, Any] | None = None,
    *,
    trusted: bool = False,
) -> dict[str, Any]:
    """A log record as stores take it: secrets redacted (unless the engine wrote the
    message itself: ``trusted``), data made JSON."""
    text = codec.safe_str(message)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"... ({len(text) - MAX_MESSAGE_CHARS:,} more characters not kept)"
    record: dict[str, Any] = {
        "ts": time.time(),
        "level": level.value,
        "message": codec.json_safe(text if trusted else codec.redact_text(text)),
        "node_id": node_id,
    }
    if data:
        record["data"] = _log_data(data)
    return record


def _log_data(data: dict[str, Any]) -> dict[str, Any]:
    """Log data as it can always be stored: JSON, redacted, NaN spelled out, bounded. A log
    line never fails its node: what cannot be kept is replaced by a note saying why."""
    try:
        safe = codec.json_safe(codec.redact(codec.to_json_value(data, where="log data")))
    except OutputError as exc:
        return {"not_logged": codec.redact_text(str(exc))}
    size = len(codec.dumps(safe))
    if size > MAX_DATA_CHARS:
        return {"not_logged": f"log data of {size:,} characters is over the limit of {MAX_DATA_CHARS:,}"}
    return safe  # type: ignore[no-any-return]


class RunLogger:
    """Structured logger of one node execution: ``ctx.log.info("msg", data={...})``.

    Lines go to the run's log in the store (secrets redacted) and to the Python logger
    ``autoflow.run`` at debug level.
    """

    def __init__(self, node_id: str | None, sink: Callable[[dict[str, Any]], None]) -> None:
        self._node_id = node_id
        self._sink = sink

    def log(self, level: LogLevel | str, message: str, data: dict[str, Any] | None = None) -> None:
        level = LogLevel(level)
        record = log_record(level, message, self._node_id, data)
        _py_logger.log(_PY_LEVELS[level], "[%s] %s", self._node_id, record["message"])
        self._sink(record)

    def debug(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.log(LogLevel.DEBUG, message, data)

    def info(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.log(LogLevel.INFO, message, data)

    def warn(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.log(LogLevel.WARN, message, data)

    warning = warn

    def error(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.log(LogLevel.ERROR, message, data)


class Context:
    """What a node sees of its run. Ask for it with a parameter annotated ``af.Context``.

    Example::

        @af.node
        def fetch(url: str, ctx: af.Context) -> dict:
            ctx.log.info("fetching", data={"url": url, "attempt": ctx.attempt})
            ctx.check_cancelled()
            ...

    Outside a run (a plain call in a cell) a context is made up for the call: its logs
    go to the Python logger ``autoflow.run`` and it is never cancelled.
    """

    def __init__(
        self,
        run_id: str,
        node_id: str,
        attempt: int = 1,
        *,
        workflow: str = "",
        log_sink: Callable[[dict[str, Any]], None] | None = None,
        cancel_event: threading.Event | None = None,
        deadline: float | None = None,
        wake_at: float | None = None,
    ) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self.attempt = attempt
        self.workflow = workflow
        self._cancel = cancel_event or threading.Event()
        self._deadline = deadline
        self.wake_at = wake_at  # when a deferred node asked to be woken (see Defer)
        self.log = RunLogger(node_id, log_sink or (lambda record: None))

    @classmethod
    def local(cls, node_id: str) -> Context:
        """A context for calling a node outside any run."""
        return cls("local", node_id)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled; long nodes should stop soon after."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`~autoflow.NodeCancelled` if the run was cancelled."""
        if self._cancel.is_set():
            raise NodeCancelled(f"run {self.run_id} was cancelled (node {self.node_id})")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early (and do not raise) if cancelled."""
        return self._cancel.wait(seconds)

    @property
    def time_remaining(self) -> float | None:
        """Seconds until this attempt's timeout, or None without a timeout."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def idempotency_key(self) -> str:
        """``run_id:node_id``: stable across retries and re-deliveries of this node."""
        return f"{self.run_id}:{self.node_id}"

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} node={self.node_id} attempt={self.attempt}>"
