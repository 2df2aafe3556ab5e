"""Utility nodes: ``data_transform``, ``clone``, ``logger`` (and ``af.delay``, built in).

``data_transform`` reshapes data with JMESPath (a declarative query language: no code
runs) and typed field assignments, as n8n's Set node does; ``clone`` copies JSON data;
``logger`` writes a line to the run's log in the seed's WorkflowLog shape.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from autoflow import codec
from autoflow.context import Context
from autoflow.models import LogLevel
from autoflow.nodes.base import NodeError, builtin
from autoflow.nodes.values import ValueType, convert

__all__ = ["Assignment", "clone", "data_transform", "logger"]


def _jmespath(source: str | None) -> str | None:
    if source is not None:
        try:
            jmespath.compile(source)
        except JMESPathError as exc:
            raise ValueError(f"{source!r} does not parse as JMESPath: {exc}") from None
    return source


class Assignment(BaseModel):
    """Set field ``name`` (a dot path: ``customer.email``) to ``value``, or to what the
    JMESPath ``path`` finds in the node's data, converted to ``type``.

    Example: ``{"name": "age", "path": "customer.age", "type": "integer"}``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    value: Any = None
    path: Annotated[str | None, AfterValidator(_jmespath)] = None
    type: ValueType = "any"

    @model_validator(mode="after")
    def _one_source(self) -> Assignment:
        if self.path is not None and self.value is not None:
            raise ValueError(f"assignment {self.name!r}: give value or path, not both")
        return self


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[last] = value


def _search(source: str, data: Any) -> Any:
    try:
        return jmespath.search(source, data)
    except JMESPathError as exc:
        raise NodeError(f"JMESPath {source!r} failed: {exc}", retryable=False) from None


@builtin("data_transform", retries=0)
def data_transform(
    data: Any = None,
    expression: Annotated[str | None, AfterValidator(_jmespath)] = None,
    assignments: list[Assignment] | None = None,
    keep_other_fields: bool = True,
    strict: bool = True,
    ignore_conversion_errors: bool = False,
) -> Any:
    """Reshape ``data``: first the JMESPath ``expression`` (e.g. ``"items[?qty > `0`].{sku:
    sku, total: price}"``), then ``assignments`` onto the result (an object; with
    ``keep_other_fields=false`` only the assigned fields remain). Values are converted to
    their ``type`` strictly, or loosely with ``strict=false``; a conversion that fails
    fails the node unless ``ignore_conversion_errors`` (the value is then kept as is)."""
    result = _search(expression, data) if expression else copy.deepcopy(data)
    if not assignments:
        return result
    if keep_other_fields and result is not None and not isinstance(result, dict):
        raise NodeError("data_transform: assignments need an object to assign into", retryable=False)
    out: dict[str, Any] = dict(result) if keep_other_fields and isinstance(result, dict) else {}
    for i, item in enumerate(assignments):
        value = _search(item.path, data) if item.path else item.value
        try:
            value = convert(value, item.type, strict, f"assignments[{i}] ({item.name})")
        except ValueError as exc:
            if not ignore_conversion_errors:
                raise NodeError(str(exc), retryable=False) from None
        _set(out, item.name, codec.to_json_value(value, where=f"assignments[{i}]"))
    return out


@builtin("clone", retries=0)
def clone(data: Any = None, copies: Annotated[int, Field(ge=1, le=10_000)] = 1) -> Any:
    """A deep copy of JSON ``data`` (``copies`` > 1: a list of that many copies, to fan
    out with ``.map``)."""
    text = json.dumps(codec.to_json_value(data, where="clone data"))
    return json.loads(text) if copies == 1 else [json.loads(text) for _ in range(copies)]


@builtin("logger", retries=0)
def logger(
    ctx: Context,
    message: str,
    level: Literal["debug", "info", "warn", "error"] = "info",
    data: Any = None,
) -> dict[str, Any]:
    """Write ``message`` (and ``data``) to the run's log; returns the seed's WorkflowLog
    record ``{timestamp, level, message, node_id, data}``. Secrets are redacted: values
    under keys such as ``password`` or ``token``, bearer tokens and URL passwords."""
    record_data = None if data is None else {"data": codec.to_json_value(data, where="logger data")}
    ctx.log.log(LogLevel(level), message, record_data)
    redacted = codec.redact(record_data["data"]) if record_data else None
    return {
        "timestamp": codec.from_ts(time.time()).isoformat(),  # type: ignore[union-attr]
        "level": level,
        "message": ctx.scrub(codec.redact_text(message)),
        "node_id": ctx.node_id,
        "data": redacted,
    }
