"""Argument templates: JSON in which references appear as markers.

``{"$ref": node_id}`` stands for another node's output and ``{"$input": name}`` for a
workflow input; ``{"$expr": "<JMESPath>"}`` and ``{"$template": "text {{ <JMESPath> }}"}``
compute a value from both (see ``autoflow.expressions``). Definitions store node
arguments and the workflow output this way; the engine resolves them when a node runs
and the stores when a run's output is read. Pure functions on JSON data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from autoflow.expressions import EXPRESSION_KINDS, evaluate, expression_refs

__all__ = ["marker", "resolve_template", "template_refs"]

_KINDS = ("$ref", "$input", *EXPRESSION_KINDS)


def marker(value: Any) -> tuple[str, str] | None:
    """``(kind, target)`` if ``value`` is a marker (``$ref``, ``$input``, ``$expr``,
    ``$template``), else None."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, target),) = value.items()
        if key in _KINDS and isinstance(target, str):
            return key, target
    return None


def template_refs(template: Any) -> Iterator[tuple[str, str]]:
    """Yield every reference ``("$ref"|"$input", target)`` inside a template, including
    those an expression reads (a malformed expression raises WorkflowError)."""
    found = marker(template)
    if found:
        if found[0] in EXPRESSION_KINDS:
            yield from expression_refs(*found)
        else:
            yield found
    elif isinstance(template, dict):
        for item in template.values():
            yield from template_refs(item)
    elif isinstance(template, list):
        for item in template:
            yield from template_refs(item)


def resolve_template(template: Any, outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
    """Replace markers in ``template`` with node outputs, workflow inputs and the values
    of expressions (``ExpressionError`` if one fails)."""
    found = marker(template)
    if found:
        kind, target = found
        if kind == "$ref":
            return outputs.get(target)
        if kind == "$input":
            return inputs.get(target)
        return evaluate(kind, target, outputs, inputs)
    if isinstance(template, dict):
        return {k: resolve_template(v, outputs, inputs) for k, v in template.items()}
    if isinstance(template, list):
        return [resolve_template(v, outputs, inputs) for v in template]
    return template
