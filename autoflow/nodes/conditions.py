"""Condition nodes: ``condition_if``, ``switch``, ``validation``, ``error_handler``, ``retry``.

Conditions are declarative (operators on typed values, no code): a rule compares its
``left`` value with its ``right`` value, both usually expressions such as
``{"$expr": "nodes.order.amount"}``. ``condition_if`` returns a bool, so it drives a
branch (``when``); ``switch`` names the first (or every) matching output.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from autoflow.context import Context
from autoflow.define.node import Backoff, Node
from autoflow.nodes.base import NodeError, builtin, optional_import
from autoflow.nodes.values import ValueType, convert

__all__ = ["Case", "Rule", "condition_if", "error_handler", "retry", "switch", "validation"]

Operator = Literal[
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "regex",
    "not_regex",
    "in",
    "not_in",
    "exists",
    "not_exists",
    "empty",
    "not_empty",
    "is_true",
    "is_false",
    "length_equals",
    "length_gt",
    "length_lt",
]
_UNARY = {"exists", "not_exists", "empty", "not_empty", "is_true", "is_false"}


class Rule(BaseModel):
    """One comparison: ``left <operator> right``, values taken as ``type``.

    Example: ``{"left": {"$expr": "nodes.order.total"}, "operator": "gt", "right": 100,
    "type": "number"}``."""

    model_config = ConfigDict(extra="forbid")

    left: Any = None
    operator: Operator
    right: Any = None
    type: ValueType = "any"


def _text(value: Any, case_sensitive: bool) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if case_sensitive else text.lower()


def _compare(op: str, left: Any, right: Any, where: str) -> bool:
    try:
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        raise ValueError(
            f"{where}: cannot compare {type(left).__name__} with {type(right).__name__}; give the rule a type"
        ) from None


def _holds(rule: Rule, strict: bool, case_sensitive: bool, where: str) -> bool:
    op, kind = rule.operator, rule.type
    if op in ("exists", "not_exists"):
        return (rule.left is not None) == (op == "exists")
    if op in ("empty", "not_empty"):
        empty = rule.left is None or (isinstance(rule.left, (str, list, dict)) and not rule.left)
        return empty == (op == "empty")
    if op in ("is_true", "is_false"):
        return bool(convert(rule.left, "boolean", strict, f"{where}.left")) is (op == "is_true")
    if op.startswith("length_"):
        left = rule.left
        if not isinstance(left, (str, list, dict)):
            raise ValueError(f"{where}.left: {op} needs a string, array or object")
        size = convert(rule.right, "integer", False, f"{where}.right")
        return bool(
            {"length_equals": len(left) == size, "length_gt": len(left) > size, "length_lt": len(left) < size}[op]
        )
    left = convert(rule.left, kind, strict, f"{where}.left")
    right = convert(rule.right, kind, strict, f"{where}.right")
    if not case_sensitive:
        left = left.lower() if isinstance(left, str) else left
        right = right.lower() if isinstance(right, str) else right
    if op in ("equals", "not_equals"):
        return bool(left == right) == (op == "equals")
    if op in ("gt", "gte", "lt", "lte"):
        if kind == "any" and (isinstance(left, datetime) or isinstance(right, datetime)):
            raise ValueError(f"{where}: compare date-times with type 'datetime'")
        return _compare(op, left, right, where)
    if op in ("contains", "not_contains"):
        found = right in left if isinstance(left, (list, dict)) else _text(right, True) in _text(left, True)
        return found == (op == "contains")
    if op in ("in", "not_in"):
        if not isinstance(right, (list, dict, str)):
            raise ValueError(f"{where}.right: '{op}' needs an array, object or string")
        return bool(left in right) == (op == "in")
    if op == "starts_with":
        return _text(left, True).startswith(_text(right, True))
    if op == "ends_with":
        return _text(left, True).endswith(_text(right, True))
    try:
        matched = re.search(_text(right, True), _text(left, True)) is not None
    except re.error as exc:
        raise ValueError(f"{where}.right: bad regular expression: {exc}") from None
    return matched == (op == "regex")


def evaluate_rules(
    rules: list[Rule], combinator: str, strict: bool, case_sensitive: bool, where: str = "conditions"
) -> bool:
    """Whether ``rules`` hold, combined with ``and``/``or`` (short-circuit, in order)."""
    try:
        results = (_holds(rule, strict, case_sensitive, f"{where}[{i}]") for i, rule in enumerate(rules))
        return all(results) if combinator == "and" else any(results)
    except ValueError as exc:
        raise NodeError(str(exc), retryable=False) from None


@builtin("condition_if", retries=0)
def condition_if(
    conditions: list[Rule],
    combinator: Literal["and", "or"] = "and",
    strict: bool = True,
    case_sensitive: bool = True,
) -> bool:
    """True when the conditions hold (all of them, or any with ``combinator="or"``).
    Use it as a branch: nodes with ``"when": {"node": <this id>, "value": true}`` run
    when it held, those with ``false`` when it did not.

    Example::

        {"id": "big", "type": "condition_if", "config": {"conditions": [
            {"left": {"$expr": "nodes.order.total"}, "operator": "gt", "right": 100, "type": "number"}]}}
    """
    return evaluate_rules(conditions, combinator, strict, case_sensitive)


class Case(BaseModel):
    """One output of a switch: its name and the rules that select it.

    Example: ``{"output": "urgent", "conditions": [{"left": {"$expr": "nodes.t.priority"},
    "operator": "gte", "right": 8, "type": "number"}]}``."""

    model_config = ConfigDict(extra="forbid")

    output: str
    conditions: list[Rule]
    combinator: Literal["and", "or"] = "and"


@builtin("switch", retries=0)
def switch(
    cases: list[Case],
    fallback: str | None = None,
    all_matches: bool = False,
    strict: bool = True,
    case_sensitive: bool = True,
) -> dict[str, Any]:
    """Pick an output: ``{"output": <first matching case, else fallback>, "outputs":
    [<every matching case>], "index": <position of the first match or None>}``. Route on
    it with condition_if (``nodes.<switch>.output equals "..."``); with ``all_matches``
    several routes may be taken (``nodes.<switch>.outputs contains "..."``)."""
    matches = [
        (i, case.output)
        for i, case in enumerate(cases)
        if evaluate_rules(case.conditions, case.combinator, strict, case_sensitive, f"cases[{i}].conditions")
    ]
    if not all_matches:
        matches = matches[:1]
    first = matches[0] if matches else None
    return {
        "output": first[1] if first else fallback,
        "outputs": [name for _, name in matches] or ([fallback] if fallback is not None else []),
        "index": first[0] if first else None,
    }


def _schema(value: dict[str, Any]) -> dict[str, Any]:
    jsonschema = optional_import("jsonschema", "validation", "validation")
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema (2020-12): {exc.message}") from None
    return value


def _pointer(path: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


class ValidationFailed(NodeError):
    """``validation`` found errors; ``errors`` lists ``{"pointer", "message", "keyword"}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        shown = "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in errors[:10])
        more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"{len(errors)} validation error(s): {shown}{more}", retryable=False)
        self.errors = errors


@builtin("validation", retries=0)
def validation(
    data: Any,
    schema: Annotated[dict[str, Any], AfterValidator(_schema)],
    on_invalid: Literal["fail", "report"] = "fail",
) -> Any:
    """Check ``data`` against a JSON Schema (draft 2020-12), reporting every error with
    its JSON pointer. ``on_invalid="fail"`` (default) fails the node and passes valid data
    on unchanged; ``"report"`` returns ``{"valid", "errors", "data"}`` either way."""
    jsonschema = optional_import("jsonschema", "validation", "validation")
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [
        {"pointer": _pointer(e.absolute_path), "message": e.message, "keyword": e.validator}
        for e in sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    ]
    if on_invalid == "report":
        return {"valid": not errors, "errors": errors, "data": data}
    if errors:
        raise ValidationFailed(errors)
    return data


def _error_dict(error: Any) -> dict[str, Any]:
    if isinstance(error, dict):
        return {k: error.get(k) for k in ("type", "message", "traceback", "node_id")}
    return {"type": None, "message": None if error is None else str(error), "traceback": None, "node_id": None}


@builtin("error_handler", retries=1, trigger="one_failed")
def error_handler(
    error: Any,
    ctx: Context,
    workflow: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Handle the failure of the node wired into ``error`` (runs only when it failed:
    trigger ``one_failed``): log it and, with ``workflow``, start that workflow as a
    separate run with the seed/n8n error payload as its trigger data (once per failure).
    Returns ``{"handled": true, "error": {...}, "started_run": <run id or null>}``; the
    failure then counts as handled and the run can complete."""
    info = _error_dict(error)
    ctx.log.error(f"handling the failure of {info['node_id'] or 'a node'}: {info['type']}: {info['message']}")
    started = None
    if workflow:
        payload = {
            "execution": {
                "id": ctx.run_id,
                "error": {"message": info["message"], "type": info["type"], "stack": info["traceback"]},
                "lastNodeExecuted": info["node_id"],
                "mode": ctx.trigger.kind,
            },
            "workflow": {"name": ctx.workflow},
        }
        started = ctx.start_workflow(workflow, inputs, payload)
        ctx.log.info(f"started workflow {workflow} as run {started}")
    return {"handled": True, "error": info, "started_run": started}


def retry(
    target: Node[Any, Any],
    *,
    attempts: int = 3,
    backoff: Backoff | None = None,
    retry_on: list[str | int] | tuple[str | int, ...] | None = None,
) -> Node[Any, Any]:
    """A retry policy around a node: the same node with the engine's retry options set
    (``attempts`` in all, ``backoff`` with jitter, ``retry_on`` exception type names,
    provider codes or HTTP status codes). No second retry loop: the engine retries.

    Example::

        fetch = af.nodes.retry(af.nodes.http_request, attempts=5, retry_on=[429, 503, "NodeError"])

    In a JSON definition the same policy is the node's ``options``:
    ``{"retries": 4, "backoff": {"base": 1, "factor": 2, "max": 30}, "retry_on": [429, 503]}``.
    """
    if not isinstance(target, Node):
        raise TypeError(f"retry() wraps an af.Node, got {target!r}")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise ValueError(f"retry(attempts=...) must be an int >= 1, got {attempts!r}")
    changes: dict[str, Any] = {"retries": attempts - 1}
    if backoff is not None:
        changes["backoff"] = backoff
    if retry_on is not None:
        changes["retry_on"] = tuple(retry_on)
    return target.with_options(**changes)
