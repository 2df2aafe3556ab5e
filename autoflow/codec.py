"""Pure helpers at the serialisation boundary: JSON values, ids, redaction, errors.

Everything that leaves a process (node outputs, inputs, errors, log data) goes through
here, so the rules live in one place: JSON only, secrets redacted, sizes bounded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
import traceback as tb
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel, TypeAdapter

from autoflow.errors import OutputError
from autoflow.models import ErrorInfo

__all__ = [
    "dumps",
    "error_info",
    "from_ts",
    "loads",
    "new_id",
    "new_run_id",
    "redact",
    "redact_text",
    "to_json_value",
]

_ANY = TypeAdapter(Any)
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authorization|auth|cookie|credential|private[_-]?key)",
    re.IGNORECASE,
)
_SECRET_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 ***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "***jwt***"),
    (re.compile(r"\b(sk|pk|rk)_(live|test)_[A-Za-z0-9]{8,}"), "***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "***"),
    (
        re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*([^\s,;'\"&]+)"),
        r"\1=***",
    ),
    (re.compile(r"(\w+://[^:/@\s]*:)[^@/\s]+@"), r"\1***@"),
]
REDACTED = "***"


def to_json_value(value: Any, *, where: str = "value") -> Any:
    """Convert a node output to plain JSON data (dict/list/str/number/bool/None).

    Pydantic models, dataclasses, datetimes, tuples and sets are converted; anything
    else raises :class:`OutputError` naming ``where`` and the offending type.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_value(dataclasses.asdict(value), where=where)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise OutputError(
                    f"{where} has a dict key of type {type(key).__name__} ({key!r}); JSON object keys must be str"
                )
            out[key] = to_json_value(item, where=f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    try:
        return _ANY.dump_python(value, mode="json")
    except Exception as exc:
        raise OutputError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which cannot "
            "be stored as JSON; return a dict, list, str, number, bool, None, datetime, "
            "dataclass or pydantic model"
        ) from exc


def dumps(value: Any) -> str:
    """Compact JSON text of an already JSON-able value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes | None) -> Any:
    return None if text is None or text == "" else json.loads(text)


_id_lock = threading.Lock()
_id_state = [0, 0]  # last millisecond, sequence within it


def new_run_id() -> str:
    """A run id that sorts by creation time: 12 hex digits of ms, 4 of a per-process
    sequence (ids made in one process sort in creation order), then 8 random."""
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms <= _id_state[0]:
            ms = _id_state[0]
            _id_state[1] += 1
            if _id_state[1] > 0xFFFF:
                ms, _id_state[1] = ms + 1, 0
        else:
            _id_state[1] = 0
        _id_state[0] = ms
        seq = _id_state[1]
    return f"{ms:012x}{seq:04x}{os.urandom(4).hex()}"


def new_id() -> str:
    return os.urandom(8).hex()


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def redact_text(text: str) -> str:
    """Blank out tokens, passwords and credentials in URLs inside free text."""
    for pattern, repl in _SECRET_TEXT:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any) -> Any:
    """Redact secrets in JSON-like data: values under secret-looking keys and in strings."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def error_info(exc: BaseException, node_id: str | None = None, *, limit: int = 20_000) -> ErrorInfo:
    """An :class:`ErrorInfo` of an exception, with secrets redacted and size bounded."""
    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(
        type=type(exc).__name__,
        message=redact_text(str(exc))[:limit],
        traceback=redact_text(text)[-limit:],
        node_id=node_id,
    )
