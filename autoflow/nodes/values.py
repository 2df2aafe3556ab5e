"""Typed values for conditions and transforms: strict checks or loose conversion.

``strict`` (n8n's "strict type validation") refuses a value of another type; loose mode
converts where it can (``"12"`` to 12.0, ``"true"`` to True, an ISO string to a datetime,
a JSON string to a list or object) and names the value when it cannot.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = ["ValueType", "convert"]

ValueType = Literal["any", "string", "number", "integer", "boolean", "datetime", "array", "object"]

_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n", ""}


class _Refused(ValueError):
    pass


def _datetime(value: Any, strict: bool) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Refused("is not an ISO 8601 date-time") from None
    elif not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        raise _Refused("is not a date-time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number(value: Any, strict: bool) -> float | int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Refused("is not a finite number")
        return value
    if strict:
        raise _Refused("is not a number")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Refused("does not convert to a number") from None
        if math.isfinite(number):
            return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    raise _Refused("does not convert to a number")


def _boolean(value: Any, strict: bool) -> bool:
    if isinstance(value, bool):
        return value
    if strict:
        raise _Refused("is not a boolean")
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Refused("does not convert to a boolean")


def _container(value: Any, kind: type, strict: bool) -> Any:
    if isinstance(value, kind):
        return value
    if not strict and isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, kind):
            return parsed
    raise _Refused(f"is not {'an array' if kind is list else 'an object'}")


def convert(value: Any, kind: ValueType, strict: bool, where: str) -> Any:
    """``value`` as type ``kind``; ValueError naming ``where`` and the value otherwise."""
    try:
        if kind == "any":
            return value
        if kind == "string":
            if isinstance(value, str):
                return value
            if strict:
                raise _Refused("is not a string")
            return "" if value is None else value if isinstance(value, str) else json.dumps(value)
        if kind in ("number", "integer"):
            number = _number(value, strict)
            if kind == "integer":
                if isinstance(number, float) and not number.is_integer():
                    raise _Refused("is not an integer")
                return int(number)
            return number
        if kind == "boolean":
            return _boolean(value, strict)
        if kind == "datetime":
            return _datetime(value, strict)
        return _container(value, list if kind == "array" else dict, strict)
    except _Refused as exc:
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        hint = "" if not strict else " (strict type validation: set strict=false to convert)"
        raise ValueError(f"{where}: {shown} {exc}{hint}") from None
