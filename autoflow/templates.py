"""Argument templates: JSON in which references appear as markers.

``{"$ref": node_id}`` stands for another node's output and ``{"$input": name}`` for a
workflow input. Definitions store node arguments and the workflow output this way; the
engine resolves them when a node runs and the stores when a run's output is read. Pure
functions on JSON data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["marker", "resolve_template", "template_refs"]


def marker(value: Any) -> tuple[str, str] | None:
    """``("$ref"|"$input", target)`` if ``value`` is a marker, else None."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, target),) = value.items()
        if key in ("$ref", "$input") and isinstance(target, str):
            return key, target
    return None


def template_refs(template: Any) -> Iterator[tuple[str, str]]:
    """Yield every marker ``("$ref"|"$input", target)`` inside a template."""
    found = marker(template)
    if found:
        yield found
    elif isinstance(template, dict):
        for item in template.values():
            yield from template_refs(item)
    elif isinstance(template, list):
        for item in template:
            yield from template_refs(item)


def resolve_template(template: Any, outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
    """Replace markers in ``template`` with node outputs and workflow inputs."""
    found = marker(template)
    if found:
        kind, target = found
        return outputs.get(target) if kind == "$ref" else inputs.get(target)
    if isinstance(template, dict):
        return {k: resolve_template(v, outputs, inputs) for k, v in template.items()}
    if isinstance(template, list):
        return [resolve_template(v, outputs, inputs) for v in template]
    return template
