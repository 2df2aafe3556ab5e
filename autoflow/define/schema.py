"""Type checks used when building graphs: annotation compatibility and a small JSON-schema check.

Both are deliberately lenient: they reject only what is certainly wrong (``str`` into
``int``), because values are validated again, with pydantic, when a node runs.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["check_json_schema", "compatible"]

_SCALARS: tuple[type, ...] = (int, float, str, bool, bytes, list, dict, tuple, set, frozenset, type(None))
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


def _unwrap(t: Any) -> list[Any]:
    """Members of a Union/Optional, the origin of a generic, or the type itself."""
    if t is None:
        return [type(None)]
    origin = typing.get_origin(t)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(t, types.UnionType)):
        return [m for a in typing.get_args(t) for m in _unwrap(a)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin is not None:
        return [origin]
    return [t]


def _class_ok(source: Any, target: Any) -> bool:
    if not (isinstance(source, type) and isinstance(target, type)):
        return True  # Literal, TypeVar, Any, ...: leave it to run-time validation
    if issubclass(source, target):
        return not (source is bool and target is int)
    if source is int and target is float:
        return True
    # JSON round trips: models and dataclasses travel as dicts, datetimes as strings.
    if issubclass(source, BaseModel) or issubclass(target, BaseModel):
        return issubclass(source, (dict, BaseModel)) or issubclass(target, (dict, BaseModel))
    if issubclass(source, (datetime, date)) or issubclass(target, (datetime, date)):
        return issubclass(source, (str, datetime, date)) and issubclass(target, (str, datetime, date))
    if source in (tuple, list, set, frozenset) and target in (tuple, list, set, frozenset):
        return True
    # Only pairs of well-known classes are certainly incompatible.
    return not (source in _SCALARS and target in _SCALARS)


def compatible(source: Any, target: Any) -> bool:
    """False only when a value annotated ``source`` can never be valid for ``target``."""
    empty = inspect.Parameter.empty
    if source is empty or target is empty or source is Any or target is Any:
        return True
    sources, targets = _unwrap(source), _unwrap(target)
    if any(s is Any for s in sources) or any(t is Any for t in targets):
        return True
    return any(_class_ok(s, t) for s in sources for t in targets)


def check_json_schema(value: Any, schema: Mapping[str, Any], *, reveal: bool = True) -> str | None:
    """A short problem description if ``value`` breaks the schema's ``type``/``enum``, else
    None. With ``reveal=False`` (a secret input) the value itself is never quoted."""
    kinds = schema.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if isinstance(kinds, list) and kinds:
        allowed = tuple(t for k in kinds for t in _JSON_TYPES.get(k, ()))
        bad_bool = isinstance(value, bool) and "boolean" not in kinds
        if allowed and (not isinstance(value, allowed) or bad_bool):
            return f"expected {' or '.join(kinds)}, got {type(value).__name__}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"expected one of {enum}, got {value!r}" if reveal else f"expected one of {enum}"
    return None
