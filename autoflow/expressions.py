"""Expressions in argument templates: JMESPath paths and ``{{ }}`` string templates.

A JSON config value may compute itself from the workflow's inputs and upstream outputs:

* ``{"$expr": "nodes.fetch.body.items[0].id"}`` -- a JMESPath expression, its value as is;
* ``{"$template": "Order {{ nodes.check.id }} for {{ inputs.email }}"}`` -- a string with
  JMESPath placeholders (a string that is one placeholder alone keeps the value's type).

Expressions are evaluated against ``{"inputs": {...}, "nodes": {node_id: output}}``.
Every node an expression names (``nodes.<id>``) becomes a dependency of the node that
uses it, so the engine orders the nodes and loads that output. JMESPath is declarative:
no code runs, there is no ``eval``. Pure functions; compiled expressions are cached.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from autoflow.errors import InputError, WorkflowError

__all__ = ["EXPRESSION_KINDS", "ExpressionError", "evaluate", "expression_refs"]

#: The marker keys of expressions.
EXPRESSION_KINDS = ("$expr", "$template")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class ExpressionError(InputError):
    """An expression failed while a node's arguments were resolved (names the expression)."""


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> Any:
    if not text.strip():
        raise WorkflowError("an expression is empty")
    try:
        return jmespath.compile(text)
    except JMESPathError as exc:
        raise WorkflowError(f"expression {text!r} does not parse as JMESPath: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _pieces(kind: str, text: str) -> tuple[str, ...]:
    """The JMESPath sources inside an expression marker (checked)."""
    if kind == "$expr":
        _compile(text)
        return (text,)
    found = tuple(m.group(1).strip() for m in _PLACEHOLDER.finditer(text))
    rest = _PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise WorkflowError(f"template {text!r} has an unbalanced '{{{{' or '}}}}'")
    for source in found:
        _compile(source)
    return found


def _head(node: Mapping[str, Any]) -> str | None:
    """The first field name of an AST node (``fetch`` in ``fetch[0].x``)."""
    while node.get("type") != "field":
        children = node.get("children") or []
        if not children:
            return None
        node = children[0]
    value = node.get("value")
    return value if isinstance(value, str) else None


def _walk(node: Mapping[str, Any], text: str) -> Iterator[tuple[str, str]]:
    children = node.get("children") or []
    if node.get("type") == "subexpression" and len(children) >= 2:
        root = children[0]
        if root.get("type") == "field" and root.get("value") in ("nodes", "inputs"):
            name = _head(children[1])
            if name is None:
                raise WorkflowError(
                    f"expression {text!r}: name the {root['value'][:-1]} after '{root['value']}.' "
                    f"(e.g. {root['value']}.<name>.field)"
                )
            yield ("$ref" if root["value"] == "nodes" else "$input"), name
            for child in children[1:]:
                yield from _walk(child, text)
            return
    if node.get("type") == "field" and node.get("value") == "nodes":
        raise WorkflowError(
            f"expression {text!r}: refer to upstream outputs by name, as nodes.<node_id>..., so "
            "that the engine knows which nodes it depends on"
        )
    for child in children:
        if isinstance(child, Mapping):
            yield from _walk(child, text)


def expression_refs(kind: str, text: str) -> Iterator[tuple[str, str]]:
    """``("$ref", node_id)`` and ``("$input", name)`` pairs an expression reads.

    Raises :class:`~autoflow.WorkflowError` if it does not parse or reads ``nodes``
    without naming a node."""
    if not isinstance(text, str):
        raise WorkflowError(f"{kind} takes a string, got {type(text).__name__}")
    for source in _pieces(kind, text):
        yield from _walk(_compile(source).parsed, source)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def evaluate(kind: str, text: str, outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
    """The value of an expression marker; :class:`ExpressionError` names it on failure."""
    root = {"inputs": dict(inputs), "nodes": dict(outputs)}
    try:
        sources = _pieces(kind, text)
        if kind == "$expr":
            return _compile(text).search(root)
        whole = _PLACEHOLDER.fullmatch(text.strip())
        if whole is not None and len(sources) == 1:
            return _compile(sources[0]).search(root)
        values = iter([_text(_compile(s).search(root)) for s in sources])
        return _PLACEHOLDER.sub(lambda _m: next(values), text)
    except (JMESPathError, WorkflowError) as exc:
        raise ExpressionError(f"{kind} {text!r} failed: {exc}") from None
