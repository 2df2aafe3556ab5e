"""Pure helpers at the serialisation boundary: JSON values, ids, redaction, errors.

Everything that leaves a process (node outputs, inputs, errors, log data) goes through
here, so the rules live in one place: JSON only, secrets redacted, sizes bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
import traceback as tb
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

from pydantic import BaseModel, TypeAdapter

from autoflow.config import Limits
from autoflow.errors import OutputError
from autoflow.models import ErrorInfo

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "dumps",
    "dumps_checked",
    "error_info",
    "from_ts",
    "is_secret_key",
    "json_checked",
    "json_safe",
    "keyed_run_id",
    "loads",
    "new_id",
    "new_run_id",
    "quote_url_password",
    "redact",
    "redact_text",
    "register_secret",
    "safe_str",
    "to_json_value",
    "url_password",
]

_ANY = TypeAdapter(Any)
_KEY_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|x-api-key|authori[sz]ation|auth(?!or)|cookie"
    r"|set-cookie|credentials?|private[_-]?key|access[_-]?key|client[_-]?secret|session[_-]?id|signature"
)
_SECRET_KEY = re.compile(rf"(?:{_KEY_WORDS})", re.IGNORECASE)
_CREDENTIAL = (
    r"(?:(?:(?=[^\s]*[\d._=+/~-])|(?-i:(?=[^\s]*[a-z])(?=[^\s]*[A-Z])))[A-Za-z0-9._~+/=:-]{6,}"
    r"|[A-Za-z0-9._~+/=:-]{20,})"
)
_SECRET_TEXT: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # URLs with credentials: everything between "scheme://user:" and the last "@" before
    # the host, so passwords containing "@" or "/" are covered too.
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)\S*@(?=[^@\s]*)"), r"\1***@"),
    # A credential after its scheme: a word that looks like one (digits, mixed case or
    # punctuation such as . = + /) or a long one, so prose ("the token lacks a scope") stays.
    (re.compile(rf"(?i)\b(bearer|basic|digest|token|negotiate)\s+{_CREDENTIAL}"), r"\1 ***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "***jwt***"),
    (re.compile(r"\b(sk|pk|rk|whsec)_(live_|test_)?[A-Za-z0-9]{8,}"), "***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "***"),
    # key=value, key: value, "key": "value", 'key': 'value', key="value" (dict reprs,
    # JSON, headers, query strings, command lines).
    (
        re.compile(
            rf"""(?ix)
            (?<![\w.-])(?P<key>["']?[\w.-]{{0,32}}?(?:{_KEY_WORDS})[\w.-]{{0,32}}["']?)
            (?P<sep>\s*[=:]\s*)
            (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|(?:(?:bearer|basic|digest|token|negotiate)\s+)?[^\s,;&}})\]]+)
            """
        ),
        lambda m: f"{m.group('key')}{m.group('sep')}{_mask(m.group('value'))}",
    ),
]
REDACTED = "***"

_known_lock = threading.Lock()
_known: frozenset[str] = frozenset()


def _mask(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{value[0]}{REDACTED}{value[0]}"
    return REDACTED


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret this process holds (AUTOFLOW_SECRET, a Redis password, a
    credential): :func:`redact_text` blanks it wherever it appears, whatever the context."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value or len(value) < 4:
        return
    global _known
    with _known_lock:
        _known = _known | {value}


MAX_DEPTH = 64  # nesting of JSON values autoflow stores (also bounds recursion)


def to_json_value(value: Any, *, where: str = "value", max_depth: int = MAX_DEPTH) -> Any:
    """Convert a node output to plain JSON data (dict/list/str/number/bool/None).

    Pydantic models, dataclasses, datetimes, tuples and sets are converted; anything
    else (and nesting deeper than ``max_depth``) raises :class:`OutputError` naming
    ``where``, the path inside it and the offending type.
    """
    path: list[Any] = []
    try:
        return _convert(value, path, max_depth)
    except OutputError as exc:
        raise OutputError(f"{where}{''.join(f'[{p!r}]' for p in path)} {exc}") from exc.__cause__
    except RecursionError:
        raise OutputError(f"{where} is nested too deeply to store as JSON") from None


def _convert(value: Any, path: list[Any], depth: int) -> Any:
    """Helper of :func:`to_json_value`: ``path`` holds where an error happened."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth <= 0:
        raise OutputError("is nested more deeply than autoflow stores JSON values")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise OutputError(
                    f"has a dict key of type {type(key).__name__} ({key!r}); JSON object keys must be str"
                )
            path.append(key)
            out[key] = _convert(item, path, depth - 1)
            path.pop()
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = []
        for i, item in enumerate(value):
            path.append(i)
            items.append(_convert(item, path, depth - 1))
            path.pop()
        return items
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert(dataclasses.asdict(value), path, depth)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    try:
        return _ANY.dump_python(value, mode="json")
    except Exception as exc:
        raise OutputError(
            f"is a {type(value).__module__}.{type(value).__qualname__}, which cannot "
            "be stored as JSON; return a dict, list, str, number, bool, None, datetime, "
            "dataclass or pydantic model"
        ) from exc


#: One encoder for every :func:`dumps` (``json.dumps`` with options builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: ``_ENCODER``'s C encoder, made once: ``JSONEncoder.encode`` makes one per call, which is
#: most of the cost of a small value (a log record: 4.8 -> 2.5 us). No check for circular
#: values (their RecursionError is reported as nesting too deep, see dumps_checked).
_C_ENCODER = (
    None
    if json.encoder.c_make_encoder is None  # type: ignore[attr-defined]
    else json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def dumps(value: Any) -> str:
    """Compact JSON text of an already JSON-able value."""
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def json_checked(value: Any, *, where: str, limits: Limits) -> tuple[Any, str]:
    """``value`` as JSON data and its text, within ``limits`` (depth, encoded size), or
    :class:`OutputError` naming ``where`` and what is wrong."""
    data = to_json_value(value, where=where, max_depth=limits.max_depth)
    return data, dumps_checked(data, where=where, max_bytes=limits.max_value_bytes)


def dumps_checked(value: Any, *, where: str, max_bytes: int | None = None) -> str:
    """JSON text of a JSON value about to be stored, or :class:`OutputError` saying why it
    cannot be: NaN or infinities, text that is not valid Unicode (lone surrogates), or
    more than ``max_bytes`` once encoded."""
    try:
        text = dumps(value)
    except ValueError as exc:  # NaN, Infinity
        raise OutputError(f"{where} is not valid JSON: {exc} (NaN and infinities cannot be stored)") from None
    except RecursionError:
        raise OutputError(f"{where} is nested too deeply to store as JSON") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise OutputError(f"{where} holds text that is not valid Unicode ({exc.reason} at {exc.start})") from None
    if max_bytes is not None and size > max_bytes:
        raise OutputError(
            f"{where} is {size:,} bytes of JSON, more than the limit of {max_bytes:,} "
            "(AUTOFLOW_MAX_VALUE_BYTES); store big data elsewhere and pass a reference"
        )
    return text


def json_safe(value: Any) -> Any:
    """A copy of JSON-like data that can always be stored: NaN and infinities become the
    strings ``"NaN"``/``"Infinity"``/``"-Infinity"``, lone surrogates are replaced. For log
    data, where a best effort beats losing the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


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


def keyed_run_id(idempotency_key: str) -> str:
    """The run id of an idempotency key: the same key always names the same run, so
    creating it is one atomic "create unless it exists" in the store, whoever asks."""
    return "k" + hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()[:27]


def new_id() -> str:
    return os.urandom(8).hex()


def _fresh_tokens() -> None:
    """A new random prefix and counter for :func:`new_token` (at import, and in a forked
    child, which must not repeat its parent's tokens), and the process id of
    :func:`current_pid`."""
    global _token_prefix, _token_seq, _pid
    _token_prefix, _token_seq, _pid = os.urandom(6).hex(), itertools.count(1), os.getpid()


def current_pid() -> int:
    """``os.getpid()`` without a system call (kept current in forked children): the hot
    path asks it per node to notice a fork (per-process connections, threads)."""
    return _pid


_token_prefix, _token_seq, _pid = "", itertools.count(1), 0
_fresh_tokens()
if hasattr(os, "register_at_fork"):  # POSIX; elsewhere processes are spawned, not forked
    os.register_at_fork(after_in_child=_fresh_tokens)


def new_token() -> str:
    """A fencing token for one attempt at a node: unique (a random per-process prefix and a
    counter) without a system call per token. Not a secret: it tells attempts apart."""
    return f"{_token_prefix}{next(_token_seq):x}"


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def quote_url_password(url: str) -> str:
    """The URL with its user and password percent-encoded, so that a password containing
    ``@``, ``/`` or ``:`` is read whole by URL parsers (idempotent)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, host = rest.rsplit("@", 1)
    user, colon, password = userinfo.partition(":")
    quoted = quote(unquote(user), safe="")
    if colon:
        quoted += ":" + quote(unquote(password), safe="")
    return f"{scheme}://{quoted}@{host}"


def url_password(url: str) -> str | None:
    """The password in a URL's user info (``scheme://user:PASSWORD@host``), else None.
    The host starts after the last ``@``, so a password may contain ``@`` and ``/``."""
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    _user, colon, password = userinfo.partition(":")
    return unquote(password) if colon and password else None


def redact_text(text: str) -> str:
    """Blank out secrets in free text: every registered secret (:func:`register_secret`),
    credentials in URLs, bearer/basic tokens, JWTs, well-known key formats and the values
    of secret-looking keys (``password=...``, ``"api_key": "..."``, ``Authorization: ...``).
    This is the one redaction function: everything that leaves a process goes through it."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, repl in _SECRET_TEXT:
        text = pattern.sub(repl, text)
    return text


def is_secret_key(key: str) -> bool:
    """True for names like ``password``, ``api_key``, ``X-Api-Key``, ``Authorization``."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """Redact secrets in JSON-like data: values under secret-looking keys and in strings."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def safe_str(value: object) -> str:
    """``str(value)``, or a description when its ``__str__`` raises (never raises)."""
    try:
        return str(value)
    except Exception as exc:  # a user class whose __str__ is broken
        try:
            return f"<unprintable {type(value).__name__}: its __str__ raised {type(exc).__name__}>"
        except Exception:
            return "<unprintable object>"


def error_info(exc: BaseException, node_id: str | None = None, *, limit: int = 20_000) -> ErrorInfo:
    """An :class:`ErrorInfo` of an exception, with secrets redacted and size bounded.
    Never raises, even for an exception whose ``__str__`` raises."""
    try:
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # formatting calls __str__ on the exception and its causes
        text = f"{type(exc).__name__}: {safe_str(exc)} (traceback unavailable)"
    return ErrorInfo(
        type=type(exc).__name__,
        message=_clean(redact_text(safe_str(exc))[:limit]),
        traceback=_clean(redact_text(text)[-limit:]),
        node_id=node_id,
    )


def _clean(text: str) -> str:
    """Text that can be stored: lone surrogates replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")
