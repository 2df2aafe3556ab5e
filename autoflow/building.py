"""Building graphs: what a node call inside a ``@workflow`` body returns.

While a workflow body runs, each node call adds a :class:`NodeCall` and returns a
:class:`NodeRef`; workflow parameters are :class:`InputRef`. Python control flow on a
reference is refused with a message that says what to do instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from autoflow import codec
from autoflow.definition import NodeSpec
from autoflow.errors import OutputError, WorkflowError
from autoflow.node import Node
from autoflow.schema import compatible

__all__ = ["Builder", "InputRef", "NodeCall", "NodeRef", "to_template"]


class Ref:
    """Common behaviour of references: Python control flow on them is an error."""

    _what = "reference"

    def _refuse(self, action: str, instead: str) -> WorkflowError:
        return WorkflowError(
            f"cannot {action} {self._what} inside a workflow definition: its value is only "
            f"known when the workflow runs; {instead}"
        )

    def __bool__(self) -> bool:
        raise self._refuse("test the truth of", "use a node to decide, or when= branching")

    def __iter__(self) -> Iterator[Any]:
        raise self._refuse("iterate over", "pass the whole value to a node (or use .map)")

    def __len__(self) -> int:
        raise self._refuse("take len() of", "compute it in a node")

    def __getitem__(self, key: Any) -> Any:
        raise self._refuse("index", "pass the whole value to a node that picks the field")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._refuse(f"read attribute {name!r} of", "pass the value to a node that reads it")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        raise self._refuse("compare", "compare inside a node")

    def marker(self) -> dict[str, str]:
        raise NotImplementedError


class NodeRef(Ref):
    """The future output of one node call inside a workflow body."""

    _what = "a node's output"

    def __init__(self, node_id: str, node: Node[Any, Any]) -> None:
        object.__setattr__(self, "node_id", node_id)
        object.__setattr__(self, "node", node)

    node_id: str
    node: Node[Any, Any]

    def marker(self) -> dict[str, str]:
        return {"$ref": self.node_id}

    def __repr__(self) -> str:
        return f"<NodeRef {self.node_id}>"


class InputRef(Ref):
    """A workflow parameter inside the workflow body."""

    _what = "a workflow input"

    def __init__(self, name: str, annotation: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "annotation", annotation)

    name: str
    annotation: Any

    def marker(self) -> dict[str, str]:
        return {"$input": self.name}

    def __repr__(self) -> str:
        return f"<InputRef {self.name}>"


@dataclass(frozen=True)
class NodeCall:
    """One call of a node inside a workflow: a vertex of the graph."""

    spec: NodeSpec
    node: Node[Any, Any]

    @property
    def id(self) -> str:
        return self.spec.id


def to_template(value: Any, where: str, refs: list[Ref], depth: int = 0) -> Any:
    """JSON template of an argument; references may be the argument itself or an item of
    a list/dict argument (what edges can express), not deeper."""
    if isinstance(value, Ref):
        if depth > 1:
            raise WorkflowError(
                f"{where}: a reference nested more than one level deep; pass it directly or as an "
                "item of a list/dict argument"
            )
        refs.append(value)
        return value.marker()
    if isinstance(value, dict):
        return {str(k): to_template(v, f"{where}[{k!r}]", refs, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_template(v, f"{where}[{i}]", refs, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Node):
        raise WorkflowError(f"{where}: pass the node's output (call it), not the node {value.name!r}")
    try:
        return codec.to_json_value(value, where=where)
    except OutputError as exc:
        raise WorkflowError(f"{exc} (constant arguments are stored as JSON)") from None


class Builder:
    """Collects node calls while a workflow body runs (see ``node.current_builder``)."""

    def __init__(self, name: str, params: Mapping[str, inspect.Parameter]) -> None:
        self.name = name
        self.params = params
        self.calls: dict[str, NodeCall] = {}

    def _unique(self, base: str) -> str:
        if base not in self.calls:
            return base
        n = 2
        while f"{base}_{n}" in self.calls:
            n += 1
        return f"{base}_{n}"

    def add_call(self, node: Node[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> NodeRef:
        node_id = self._unique(node.name)
        bound = node.bind(args, kwargs)
        templates: dict[str, Any] = {}
        for param_name, value in bound.items():
            refs: list[Ref] = []
            where = f"workflow {self.name!r}, node {node_id!r}, argument {param_name!r}"
            templates[param_name] = to_template(value, where, refs)
            param = node.params[param_name]
            if isinstance(value, Ref):
                _check_types(value, param.annotation, where)
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                for item in value:
                    if isinstance(item, Ref):
                        _check_types(item, param.annotation, where)
        spec = NodeSpec(node_id, node.key, templates, node.options)
        self.calls[node_id] = NodeCall(spec, node)
        return NodeRef(node_id, node)


def _check_types(ref: Ref, target: Any, where: str) -> None:
    source = ref.node.returns if isinstance(ref, NodeRef) else ref.annotation
    if not compatible(source, target):
        what = f"node {ref.node_id!r} returns" if isinstance(ref, NodeRef) else f"input {ref.name!r} is"
        raise WorkflowError(
            f"{where}: {what} {_type_name(source)} but the parameter expects {_type_name(target)}"
        )


def _type_name(t: Any) -> str:
    if t is inspect.Parameter.empty:
        return "Any"
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")
