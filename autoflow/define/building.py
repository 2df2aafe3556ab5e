"""Building graphs: what a node call inside a ``@workflow`` body returns.

While a workflow body runs, each node call adds a :class:`NodeCall` and returns a
:class:`NodeRef`; workflow parameters are :class:`InputRef`. Python control flow on a
reference is refused with a message that says what to do instead. Control flow is
expressed as graph elements: ``node(x, when=cond)`` / ``when=~cond`` branches,
``node.map(items)`` fans out over a list known only at run time, and calling a workflow
inside another runs it as a sub-workflow node.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from autoflow import codec
from autoflow.define.definition import SUBWORKFLOW_TYPE, NodeSpec
from autoflow.define.node import Node, NodeOptions
from autoflow.define.schema import compatible
from autoflow.errors import OutputError, WorkflowError

__all__ = ["Builder", "Composable", "Condition", "InputRef", "NodeCall", "NodeRef", "to_template"]


class Ref:
    """Common behaviour of references: Python control flow on them is an error."""

    _what = "reference"

    def _refuse(self, action: str, instead: str) -> WorkflowError:
        return WorkflowError(
            f"cannot {action} {self._what} inside a workflow definition: its value is only "
            f"known when the workflow runs; {instead}"
        )

    def __bool__(self) -> bool:
        raise self._refuse("test the truth of", "branch with node(..., when=ref) or when=~ref")

    def __iter__(self) -> Iterator[Any]:
        raise self._refuse("iterate over", "fan out with node.map(ref)")

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

    def __ne__(self, other: object) -> bool:
        raise self._refuse("compare", "compare inside a node")

    def __format__(self, spec: str) -> str:
        raise self._refuse("format (f-string, str.format, %)", "build the text inside a node that takes the value")

    def __str__(self) -> str:
        raise self._refuse("turn into text (str)", "build the text inside a node that takes the value")

    def __index__(self) -> int:
        raise self._refuse("use as an integer (range, slicing, indexing)", "compute it inside a node")

    def __int__(self) -> int:
        raise self._refuse("convert to int", "convert it inside a node")

    def __float__(self) -> float:
        raise self._refuse("convert to float", "convert it inside a node")

    def __contains__(self, item: object) -> bool:
        raise self._refuse("test membership in", "test it inside a node")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("call", "call a node with it as an argument")

    def _arithmetic(self, *other: Any) -> Any:
        raise self._refuse("compute with", "do the arithmetic inside a node that takes the value")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arithmetic
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _arithmetic
    __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __and__ = __rand__ = __or__ = __ror__ = _arithmetic
    __xor__ = __rxor__ = __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _arithmetic
    __lt__ = __le__ = __gt__ = __ge__ = __neg__ = __pos__ = __abs__ = __round__ = _arithmetic

    def marker(self) -> dict[str, str]:
        raise NotImplementedError


class NodeRef(Ref):
    """The future output of one node call inside a workflow body."""

    _what = "a node's output"

    def __init__(self, node_id: str, returns: Any) -> None:
        object.__setattr__(self, "node_id", node_id)
        object.__setattr__(self, "returns", returns)

    node_id: str
    returns: Any

    def marker(self) -> dict[str, str]:
        return {"$ref": self.node_id}

    def __invert__(self) -> Condition:
        return Condition(self, expected=False)

    def __repr__(self) -> str:
        return f"<NodeRef {self.node_id}>"


class Condition:
    """``when=ref`` runs a node if ``ref`` returned True; ``when=~ref`` if it returned False."""

    def __init__(self, ref: NodeRef, expected: bool = True) -> None:
        self.ref = ref
        self.expected = expected

    def __invert__(self) -> Condition:
        return Condition(self.ref, not self.expected)

    def __bool__(self) -> bool:
        raise self.ref._refuse("test the truth of", "use it as when=")

    def __repr__(self) -> str:
        return f"<Condition {'' if self.expected else '~'}{self.ref.node_id}>"


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


class Composable(Protocol):
    """What a builder reads of a workflow called as a sub-workflow (``af.Workflow``)."""

    name: str
    digest: str
    inputs: dict[str, dict[str, Any]]
    input_types: dict[str, Any]


W = TypeVar("W", bound=Composable)


@dataclass(frozen=True)
class NodeCall(Generic[W]):
    """One vertex of the graph: a node call (``node``) or a sub-workflow (``workflow``).
    Generic in the workflow type only so that this module need not import it."""

    spec: NodeSpec
    node: Node[Any, Any] | None = None
    workflow: W | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def module(self) -> str:
        return self.node.module if self.node is not None else ""


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
    if isinstance(value, Condition):
        raise WorkflowError(f"{where}: a ~condition only goes in when=")
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


def _when(value: Any, where: str) -> tuple[str, bool] | None:
    if value is None:
        return None
    cond = Condition(value) if isinstance(value, NodeRef) else value
    if not isinstance(cond, Condition):
        raise WorkflowError(f"{where}: when= takes the output of a node that returns bool (or ~that), got {value!r}")
    returns = cond.ref.returns
    if returns is not bool and typing.get_args(returns) not in ((bool, type(None)), (type(None), bool)):
        raise WorkflowError(
            f"{where}: when= needs a node that returns bool, but node {cond.ref.node_id!r} is annotated "
            f"{_type_name(returns)}; annotate it `-> bool`"
        )
    return cond.ref.node_id, cond.expected


class Builder(Generic[W]):
    """Collects node calls while a workflow body runs (see ``node.current_builder``)."""

    def __init__(self, name: str, params: Mapping[str, inspect.Parameter]) -> None:
        self.name = name
        self.params = params
        self.calls: dict[str, NodeCall[W]] = {}

    def _unique(self, base: str) -> str:
        if base not in self.calls:
            return base
        n = 2
        while f"{base}_{n}" in self.calls:
            n += 1
        return f"{base}_{n}"

    def _templates(
        self, node_id: str, bound: Mapping[str, Any], targets: Mapping[str, tuple[Any, bool]]
    ) -> dict[str, Any]:
        """Templates of bound arguments; ``targets`` maps a parameter to (annotation, varargs)."""
        templates: dict[str, Any] = {}
        for name, value in bound.items():
            where = f"workflow {self.name!r}, node {node_id!r}, argument {name!r}"
            templates[name] = to_template(value, where, [])
            annotation, varargs = targets[name]
            if isinstance(value, Ref):
                _check_types(value, annotation, where)
            elif varargs:
                for item in value:
                    if isinstance(item, Ref):
                        _check_types(item, annotation, where)
        return templates

    @staticmethod
    def _targets(node: Node[Any, Any]) -> dict[str, tuple[Any, bool]]:
        return {name: (p.annotation, p.kind is inspect.Parameter.VAR_POSITIONAL) for name, p in node.params.items()}

    def add_call(self, node: Node[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> NodeRef:
        node_id = self._unique(node.name)
        when = None if "when" in node.params else kwargs.pop("when", None)
        where = f"workflow {self.name!r}, node {node_id!r}"
        spec = NodeSpec(
            node_id,
            node.key,
            self._templates(node_id, node.bind(args, kwargs), self._targets(node)),
            node.options,
            when=_when(when, where),
        )
        self.calls[node_id] = NodeCall(spec, node)
        return NodeRef(node_id, node.returns)

    def add_map(
        self,
        node: Node[Any, Any],
        items: Any,
        over: str | None,
        max_parallel: int | None,
        fixed: dict[str, Any],
    ) -> NodeRef:
        node_id = self._unique(node.name)
        where = f"workflow {self.name!r}, node {node_id!r} (.map)"
        when = None if "when" in node.params else fixed.pop("when", None)
        free = [name for name in node.params if name not in fixed]
        over = over or (free[0] if free else None)
        if over is None or over not in node.params or over in fixed:
            raise WorkflowError(f"{where}: name the parameter that receives each item with over=")
        if not isinstance(items, Ref):
            raise WorkflowError(f"{where}: .map takes the output of a node or a workflow input, got {items!r}")
        if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
            raise WorkflowError(f"{where}: max_parallel must be an int >= 1, got {max_parallel!r}")
        bound = node.bind((), {**fixed, over: None})
        targets = self._targets(node)
        templates = self._templates(node_id, {k: v for k, v in bound.items() if k != over}, targets)
        source = items.returns if isinstance(items, NodeRef) else items.annotation
        if not compatible(source, list):
            raise WorkflowError(f"{where}: .map needs a list, but its items are {_type_name(source)}")
        templates[over] = items.marker()
        spec = NodeSpec(
            node_id,
            node.key,
            templates,
            node.options,
            when=_when(when, where),
            map_over=over,
            max_parallel=max_parallel,
        )
        self.calls[node_id] = NodeCall(spec, node)
        item = Any if node.returns is inspect.Parameter.empty else node.returns
        return NodeRef(node_id, list.__class_getitem__(item))

    def add_workflow(self, workflow: W, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NodeRef:
        node_id = self._unique(workflow.name)
        where = f"workflow {self.name!r}, sub-workflow {node_id!r}"
        when = kwargs.pop("when", None)
        names = list(workflow.inputs)
        if len(args) > len(names):
            raise WorkflowError(f"{where}: {workflow.name} takes {len(names)} inputs, got {len(args)} positional")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in workflow.inputs:
                raise WorkflowError(f"{where}: {workflow.name} has no input {key!r}; it takes {names}")
            if key in bound:
                raise WorkflowError(f"{where}: input {key!r} given twice")
            bound[key] = value
        missing = [n for n, schema in workflow.inputs.items() if n not in bound and "default" not in schema]
        if missing:
            raise WorkflowError(f"{where}: missing input(s) {missing} of {workflow.name}")
        targets = {n: (workflow.input_types.get(n, inspect.Parameter.empty), False) for n in names}
        spec = NodeSpec(
            node_id,
            SUBWORKFLOW_TYPE,
            self._templates(node_id, bound, targets),
            NodeOptions(retries=0),
            when=_when(when, where),
            workflow=(workflow.name, workflow.digest),
        )
        self.calls[node_id] = NodeCall(spec, workflow=workflow)
        return NodeRef(node_id, inspect.Parameter.empty)


def _check_types(ref: Ref, target: Any, where: str) -> None:
    if isinstance(ref, NodeRef):
        source, what = ref.returns, f"node {ref.node_id!r} returns"
    elif isinstance(ref, InputRef):
        source, what = ref.annotation, f"input {ref.name!r} is"
    else:
        return
    if not compatible(source, target):
        raise WorkflowError(f"{where}: {what} {_type_name(source)} but the parameter expects {_type_name(target)}")


def _type_name(t: Any) -> str:
    if t is inspect.Parameter.empty:
        return "Any"
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")
