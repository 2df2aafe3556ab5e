"""The :class:`Context` injected into nodes that ask for it, and its run logger."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoflow import codec
from autoflow.errors import AutoflowError, NodeCancelled, OutputError
from autoflow.models import LogLevel

__all__ = ["Context", "CredentialError", "Credentials", "Defer", "LogBuffer", "RunLogger", "TriggerInfo"]

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


@dataclass(frozen=True)
class TriggerInfo:
    """What started a run: ``kind`` (``manual``, ``webhook``, ``schedule``, ``database``,
    ...) and the JSON ``data`` it carried, with the run's user, organisation and inputs.

    Example: ``ctx.trigger.kind == "webhook" and ctx.trigger.data["body"]``."""

    kind: str = "manual"
    data: Any = None
    user_id: str | None = None
    organization_id: str | None = None
    inputs: dict[str, Any] | None = None


class CredentialError(AutoflowError, LookupError):
    """A named credential is not configured on this worker (the message names it and
    where it was looked for, never a value). Not retried: configuration must change."""

    retryable = False


_CRED_ENV = "AUTOFLOW_CREDENTIAL_"
_CRED_FILE_ENV = "AUTOFLOW_CREDENTIALS_FILE"
_CRED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class Credentials:
    """Named secrets, resolved on the worker when a node asks for one, never stored in
    definitions, runs, logs or errors.

    A credential ``stripe`` is read from the environment variable
    ``AUTOFLOW_CREDENTIAL_STRIPE`` (upper case, ``.``/``-`` as ``_``), else from the JSON
    object in the file named by ``AUTOFLOW_CREDENTIALS_FILE``. A value is text, or JSON
    (an object such as ``{"user": "...", "password": "..."}``) when it parses as one.

    Example::

        # AUTOFLOW_CREDENTIAL_SMTP='{"user": "bot", "password": "s3cret"}'
        ctx.credential("smtp")["password"]
    """

    def __init__(self, environ: Mapping[str, str] | None = None, file: str | Path | None = None) -> None:
        self._environ = environ
        self._file = file

    def get(self, name: str) -> Any:
        if not isinstance(name, str) or not _CRED_NAME.match(name):
            raise CredentialError(f"credential names are words like 'smtp' or 'stripe.live', got {name!r}")
        environ = os.environ if self._environ is None else self._environ
        var = _CRED_ENV + re.sub(r"[.-]", "_", name).upper()
        if var in environ:
            return _parse_secret(environ[var])
        file = self._file or environ.get(_CRED_FILE_ENV)
        if file:
            try:
                data = json.loads(Path(file).read_text())
            except (OSError, ValueError) as exc:
                raise CredentialError(f"credentials file {file} is not readable JSON ({type(exc).__name__})") from None
            if isinstance(data, dict) and name in data:
                value = data[name]
                return _parse_secret(value) if isinstance(value, str) else value
        where = f"${var}" + (f" or the credentials file {file}" if file else f" (or set ${_CRED_FILE_ENV})")
        raise CredentialError(f"credential {name!r} is not configured on this worker: set {where}")


def _parse_secret(text: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _secret_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value) >= 4 else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secret_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _secret_strings(v)]
    return []


class CancelEvent(threading.Event):
    """The cancel event of one node attempt: a ``threading.Event`` whose condition is made
    when first needed (a wait, or a ``set``), since almost no attempt is waited on or
    cancelled and a condition costs a lock and a deque per node."""

    def __init__(self) -> None:  # no super().__init__(): the condition comes later
        self._flag = False

    @property
    def _cond(self) -> threading.Condition:
        cond = self.__dict__.get("_lazy_cond")
        if cond is None:  # setdefault: two threads asking at once get the same condition
            cond = self.__dict__.setdefault("_lazy_cond", threading.Condition(threading.Lock()))
        return cond  # type: ignore[no-any-return]


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

    Nodes get their I/O through it: ``ctx.credential(name)`` (a secret configured on the
    worker, blanked out of the node's logs, errors and output), ``ctx.trigger`` (what
    started the run and the data it carried), ``ctx.start_workflow(name, ...)`` (a
    separate run, once per node), ``ctx.http_transport`` (an httpx transport tests may
    inject) and ``ctx.idempotency_key``.

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
        item: int | None = None,
        credentials: Credentials | None = None,
        trigger: TriggerInfo | Callable[[], TriggerInfo] | None = None,
        http_transport: Any = None,
        starter: Callable[[str, dict[str, Any], Any], str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self.attempt = attempt
        self.workflow = workflow
        self.item = item  # the index of this item when the node runs inside a .map
        self._cancel = cancel_event or threading.Event()
        self._deadline = deadline
        self.wake_at = wake_at  # when a deferred node asked to be woken (see Defer)
        self.credentials = credentials or Credentials()
        self._trigger = trigger
        #: An ``httpx.BaseTransport`` the HTTP-calling nodes use instead of the network (tests).
        self.http_transport = http_transport
        self._starter = starter
        self._secrets: set[str] = set()
        sink = log_sink or (lambda record: None)
        self.log = RunLogger(node_id, lambda record: sink(self.scrub_record(record)))

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
        """``run_id:node_id`` (``run_id:node_id:item`` inside a ``.map``): stable across
        retries and re-deliveries of this node."""
        base = f"{self.run_id}:{self.node_id}"
        return base if self.item is None or f"[{self.item}]" in self.node_id else f"{base}:{self.item}"

    @property
    def trigger(self) -> TriggerInfo:
        """What started this run (loaded from the run record on first use)."""
        if callable(self._trigger):
            self._trigger = self._trigger()
        return self._trigger or TriggerInfo()

    def start_workflow(self, name: str, inputs: dict[str, Any] | None = None, trigger_data: Any = None) -> str:
        """Start a separate run of the workflow registered as ``name`` on this worker (not
        a sub-workflow: nobody waits for it) and return its id. Started once per node of a
        run: a retried node finds the run it started before."""
        if self._starter is None:
            raise AutoflowError(f"node {self.node_id!r}: start_workflow() works only inside a run")
        return self._starter(name, dict(inputs or {}), trigger_data)

    def credential(self, name: str) -> Any:
        """The secret configured under ``name`` on this worker (see :class:`Credentials`).
        Its text is blanked out of this node's logs and errors."""
        value = self.credentials.get(name)
        for secret in _secret_strings(value):
            self._secrets.add(secret)
            codec.register_secret(secret)  # every redaction in this process blanks it from now on
        return value

    def scrub(self, text: str) -> str:
        """``text`` with every secret this node resolved (and known patterns) blanked out."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, codec.REDACTED)
        return text

    def scrub_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A log record with this node's secrets blanked out of its message and data."""
        if not self._secrets:
            return record
        out = dict(record, message=self.scrub(str(record.get("message", ""))))
        if record.get("data") is not None:
            out["data"] = self.scrub_value(record["data"])
        return out

    def scrub_value(self, value: Any) -> Any:
        """JSON ``value`` with this node's secrets blanked out of every string in it."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_value(v) for v in value]
        return value

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} node={self.node_id} attempt={self.attempt}>"
