"""``@workflow``: compose nodes into a networkx DAG, validate it, (de)serialise it.

The workflow body runs once, at decoration time, with references in place of values:
each node call adds a vertex and returns a :class:`NodeRef`; each workflow parameter is
an :class:`InputRef`. Arguments are stored as JSON *templates* where references appear
as markers ``{"$ref": node_id}`` and ``{"$input": name}``; the engine fills them in.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, overload

import networkx as nx
from croniter import croniter
from pydantic import TypeAdapter, ValidationError

from autoflow import codec
from autoflow.errors import InputError, OutputError, WorkflowError
from autoflow.node import Node, NodeOptions, current_builder
from autoflow.registry import Registry, default_registry
from autoflow.schema import check_json_schema, compatible

__all__ = [
    "RESERVED_INPUTS",
    "InputRef",
    "NodeCall",
    "NodeRef",
    "NodeSpec",
    "Workflow",
    "parse_definition",
    "resolve_template",
    "template_refs",
    "workflow",
]

#: Options of ``Client.execute``; a workflow parameter may not use these names.
RESERVED_INPUTS = frozenset(
    {"priority", "user_id", "organization_id", "trigger_data", "idempotency_key", "display", "inputs"}
)
FORMAT_VERSION = 1
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class _Ref:
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


class NodeRef(_Ref):
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


class InputRef(_Ref):
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


def _marker(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((key, target),) = value.items()
        if key in ("$ref", "$input") and isinstance(target, str):
            return key, target
    return None


def template_refs(template: Any) -> Iterator[tuple[str, str]]:
    """Yield every marker ``("$ref"|"$input", target)`` inside a template."""
    found = _marker(template)
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
    found = _marker(template)
    if found:
        kind, target = found
        return outputs.get(target) if kind == "$ref" else inputs.get(target)
    if isinstance(template, dict):
        return {k: resolve_template(v, outputs, inputs) for k, v in template.items()}
    if isinstance(template, list):
        return [resolve_template(v, outputs, inputs) for v in template]
    return template


@dataclass(frozen=True)
class NodeSpec:
    """A node of a definition, as the engine needs it: id, registry type, argument
    templates and options. Functions are not resolved here."""

    id: str
    type: str
    args: dict[str, Any]
    options: NodeOptions

    @property
    def parents(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for kind, target in template_refs(self.args):
            if kind == "$ref":
                seen[target] = None
        return tuple(seen)


@dataclass(frozen=True)
class NodeCall:
    """One call of a node inside a workflow: a vertex of the graph."""

    spec: NodeSpec
    node: Node[Any, Any]

    @property
    def id(self) -> str:
        return self.spec.id


def _to_template(value: Any, where: str, refs: list[_Ref], depth: int = 0) -> Any:
    """JSON template of an argument; references may be the argument itself or an item of
    a list/dict argument (what edges can express), not deeper."""
    if isinstance(value, _Ref):
        if depth > 1:
            raise WorkflowError(
                f"{where}: a reference nested more than one level deep; pass it directly or as an "
                "item of a list/dict argument"
            )
        refs.append(value)
        return value.marker()
    if isinstance(value, dict):
        return {str(k): _to_template(v, f"{where}[{k!r}]", refs, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_template(v, f"{where}[{i}]", refs, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Workflow):
        raise WorkflowError(f"{where}: a workflow cannot be passed as an argument")
    if isinstance(value, Node):
        raise WorkflowError(f"{where}: pass the node's output (call it), not the node {value.name!r}")
    try:
        return codec.to_json_value(value, where=where)
    except OutputError as exc:
        raise WorkflowError(f"{exc} (constant arguments are stored as JSON)") from None


class _Builder:
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
            refs: list[_Ref] = []
            where = f"workflow {self.name!r}, node {node_id!r}, argument {param_name!r}"
            templates[param_name] = _to_template(value, where, refs)
            param = node.params[param_name]
            if isinstance(value, _Ref):
                _check_types(value, param.annotation, where)
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                for item in value:
                    if isinstance(item, _Ref):
                        _check_types(item, param.annotation, where)
        spec = NodeSpec(node_id, node.key, templates, node.options)
        self.calls[node_id] = NodeCall(spec, node)
        return NodeRef(node_id, node)


def _check_types(ref: _Ref, target: Any, where: str) -> None:
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


def parse_definition(data: Mapping[str, Any]) -> tuple[dict[str, NodeSpec], Any]:
    """Parse the ``nodes``/``edges``/``output`` of a definition into node specs.

    Edges become ``$ref`` markers in the target's argument templates. Raises
    :class:`WorkflowError` naming the node or edge at fault; does not check cycles.
    """
    if not isinstance(data, Mapping):
        raise WorkflowError(f"a workflow definition must be a JSON object, got {type(data).__name__}")
    name = data.get("name", "?")
    nodes_in = data.get("nodes")
    if not isinstance(nodes_in, list) or not nodes_in:
        raise WorkflowError(f"workflow {name!r}: 'nodes' must be a non-empty list")
    specs: dict[str, NodeSpec] = {}
    for i, raw in enumerate(nodes_in):
        where = f"workflow {name!r}, nodes[{i}]"
        if not isinstance(raw, Mapping):
            raise WorkflowError(f"{where}: each node must be an object")
        node_id, node_type = raw.get("id"), raw.get("type")
        if not isinstance(node_id, str) or not _ID.match(node_id):
            raise WorkflowError(f"{where}: 'id' must match {_ID.pattern}, got {node_id!r}")
        if node_id in specs:
            raise WorkflowError(f"{where}: duplicate node id {node_id!r}")
        if not isinstance(node_type, str) or not node_type:
            raise WorkflowError(f"{where} ({node_id}): 'type' must be a non-empty string")
        config = raw.get("config") or {}
        if not isinstance(config, Mapping):
            raise WorkflowError(f"{where} ({node_id}): 'config' must be an object")
        options = NodeOptions.from_dict(raw.get("options") or {}, where=f"node {node_id!r} options")
        specs[node_id] = NodeSpec(node_id, node_type, copy.deepcopy(dict(config)), options)
    for i, edge in enumerate(data.get("edges") or []):
        where = f"workflow {name!r}, edges[{i}]"
        if not isinstance(edge, Mapping):
            raise WorkflowError(f"{where}: each edge must be an object")
        source, target, param = edge.get("source"), edge.get("target"), edge.get("input")
        if source not in specs:
            raise WorkflowError(f"{where}: unknown source node {source!r}")
        if target not in specs:
            raise WorkflowError(f"{where}: unknown target node {target!r}")
        if not isinstance(param, str) or not param:
            raise WorkflowError(f"{where}: 'input' must name a parameter of {target!r}")
        args = specs[target].args
        marker = {"$ref": source}
        if "index" in edge:
            index = edge["index"]
            container = args.setdefault(param, [] if isinstance(index, int) else {})
            if isinstance(index, int) and isinstance(container, list) and index >= 0:
                container.extend([None] * (index + 1 - len(container)))
                container[index] = marker
            elif isinstance(index, str) and isinstance(container, dict):
                container[index] = marker
            else:
                raise WorkflowError(f"{where}: index {index!r} does not fit argument {param!r}")
        else:
            args[param] = marker
    return specs, data.get("output")


def _definition_edges(
    specs: Mapping[str, NodeSpec],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Split templates into edges (node refs) and configs (constants and $input markers)."""
    edges: list[dict[str, Any]] = []
    configs: dict[str, dict[str, Any]] = {}
    for spec in specs.values():
        config: dict[str, Any] = {}
        for param, tpl in spec.args.items():
            found = _marker(tpl)
            if found and found[0] == "$ref":
                edges.append({"source": found[1], "target": spec.id, "input": param})
                continue
            if isinstance(tpl, list):
                items = []
                for i, item in enumerate(tpl):
                    m = _marker(item)
                    if m and m[0] == "$ref":
                        edges.append({"source": m[1], "target": spec.id, "input": param, "index": i})
                        item = None
                    items.append(item)
                tpl = items
            elif isinstance(tpl, dict) and not found:
                kept = {}
                for key, item in tpl.items():
                    m = _marker(item)
                    if m and m[0] == "$ref":
                        edges.append({"source": m[1], "target": spec.id, "input": param, "index": key})
                        continue
                    kept[key] = item
                tpl = kept
            config[param] = tpl
        configs[spec.id] = config
    return edges, configs


class Workflow:
    """A validated DAG of node calls, built by ``@af.workflow`` or ``Workflow.from_dict``.

    Example::

        @af.workflow
        def etl(url: str, limit: int = 10):
            return parse(fetch(url), limit)

        etl.graph          # networkx.DiGraph
        etl.validate()     # raises af.WorkflowError with a clear message
        d = etl.to_dict()  # JSON definition
        af.Workflow.from_dict(d).digest == etl.digest
    """

    def __init__(
        self,
        name: str,
        calls: Mapping[str, NodeCall],
        inputs: Mapping[str, dict[str, Any]],
        output: Any,
        *,
        module: str = "",
        description: str = "",
        schedule: str | None = None,
        input_types: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _ID.match(name):
            raise WorkflowError(f"workflow name must match {_ID.pattern}, got {name!r}")
        self.name = name
        self.calls = dict(calls)
        self.inputs = dict(inputs)
        self.output = output
        self.module = module
        self.description = description
        self.schedule = schedule
        self._input_types = dict(input_types or {})
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        self.graph = self._build_graph()
        self.validate()
        self.digest = hashlib.sha256(codec.dumps(_sorted(self.to_dict())).encode()).hexdigest()[:32]

    # -- graph -----------------------------------------------------------------------------
    def _build_graph(self) -> nx.DiGraph:
        graph = nx.DiGraph(name=self.name)
        for call in self.calls.values():
            graph.add_node(
                call.id, type=call.spec.type, label=call.node.name, options=call.spec.options.to_dict()
            )
        edges, _ = _definition_edges({c.id: c.spec for c in self.calls.values()})
        for edge in edges:
            if edge["source"] in self.calls:
                graph.add_edge(edge["source"], edge["target"], input=edge["input"])
        return graph

    @property
    def specs(self) -> dict[str, NodeSpec]:
        return {node_id: call.spec for node_id, call in self.calls.items()}

    def validate(self) -> None:
        """Check wiring, cycles, parameters and output; raise WorkflowError naming the fault."""
        for call in self.calls.values():
            spec, node = call.spec, call.node
            for kind, target in template_refs(spec.args):
                if kind == "$ref" and target not in self.calls:
                    raise WorkflowError(f"node {spec.id!r} uses the output of unknown node {target!r}")
                if kind == "$input" and target not in self.inputs:
                    raise WorkflowError(f"node {spec.id!r} uses unknown workflow input {target!r}")
            unknown = set(spec.args) - set(node.params)
            if unknown:
                raise WorkflowError(
                    f"node {spec.id!r} ({spec.type}) has no parameter(s) {sorted(unknown)}; "
                    f"it takes {sorted(node.params)}"
                )
            missing = [p.name for p in node.params.values() if p.required and p.name not in spec.args]
            if missing:
                raise WorkflowError(f"node {spec.id!r} ({spec.type}) is missing argument(s) {missing}")
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = " -> ".join(edge[0] for edge in nx.find_cycle(self.graph))
            raise WorkflowError(f"workflow {self.name!r} has a cycle: {cycle}")
        for kind, target in template_refs(self.output):
            if (kind == "$ref" and target not in self.calls) or (
                kind == "$input" and target not in self.inputs
            ):
                raise WorkflowError(f"workflow {self.name!r}: output refers to unknown {target!r}")

    # -- inputs ----------------------------------------------------------------------------
    def validate_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check workflow inputs; return them as JSON with defaults applied, or raise InputError."""
        unknown = set(values) - set(self.inputs)
        if unknown:
            raise InputError(
                f"workflow {self.name!r} has no input(s) {sorted(unknown)}; "
                f"it takes {sorted(self.inputs) or 'none'}"
            )
        out: dict[str, Any] = {}
        for name, schema in self.inputs.items():
            if name not in values:
                if "default" not in schema:
                    raise InputError(f"workflow {self.name!r}: missing required input {name!r}")
                out[name] = schema["default"]
                continue
            value = values[name]
            if name in self._input_types:
                adapter = self._adapters.get(name) or TypeAdapter(self._input_types[name])
                self._adapters[name] = adapter
                try:
                    value = adapter.validate_python(value)
                except ValidationError as exc:
                    raise InputError(
                        f"workflow {self.name!r}, input {name!r}: {exc.errors()[0]['msg']} "
                        f"(got {type(values[name]).__name__})"
                    ) from None
            else:
                problem = check_json_schema(value, schema)
                if problem:
                    raise InputError(f"workflow {self.name!r}, input {name!r}: {problem}")
            try:
                out[name] = codec.to_json_value(value, where=f"input {name!r}")
            except OutputError as exc:
                raise InputError(str(exc)) from None
        return out

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON definition: name, version, inputs, nodes, edges, output."""
        edges, configs = _definition_edges(self.specs)
        out_marker = _marker(self.output)
        data: dict[str, Any] = {
            "name": self.name,
            "version": FORMAT_VERSION,
            "inputs": self.inputs,
            "nodes": [
                {
                    "id": c.id,
                    "type": c.spec.type,
                    "config": configs[c.id],
                    "options": c.spec.options.to_dict(),
                }
                for c in self.calls.values()
            ],
            "edges": edges,
            "output": out_marker[1] if out_marker and out_marker[0] == "$ref" else self.output,
        }
        if self.description:
            data["description"] = self.description
        if self.schedule:
            data["schedule"] = self.schedule
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], registry: Registry | None = None) -> Workflow:
        """Build (and validate) a workflow from its JSON definition, resolving node types
        through ``registry`` (default: the default registry)."""
        registry = registry or default_registry()
        specs, output = parse_definition(data)
        if isinstance(output, str):
            if output not in specs:
                raise WorkflowError(f"workflow {data.get('name')!r}: output node {output!r} does not exist")
            output = {"$ref": output}
        inputs = data.get("inputs") or {}
        if not isinstance(inputs, Mapping) or not all(isinstance(v, Mapping) for v in inputs.values()):
            raise WorkflowError("'inputs' must map each input name to a JSON schema object")
        calls = {sid: NodeCall(spec, registry.node(spec.type)) for sid, spec in specs.items()}
        return cls(
            str(data.get("name", "")),
            calls,
            {k: dict(v) for k, v in inputs.items()},
            output,
            module=str(data.get("module", "")),
            description=str(data.get("description", "")),
            schedule=data.get("schedule"),
        )

    # -- misc ------------------------------------------------------------------------------
    @property
    def node_modules(self) -> set[str]:
        return {call.node.module for call in self.calls.values()}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"workflow {self.name!r} is not called directly; run it with "
            f"af.Client().execute({self.name}, ...) (sub-workflows are not supported yet)"
        )

    def __repr__(self) -> str:
        return f"<Workflow {self.name} nodes={len(self.calls)} edges={self.graph.number_of_edges()}>"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _input_schemas(fn: Callable[..., Any], name: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise WorkflowError(f"workflow {name!r}: cannot resolve its type annotations ({exc})") from None
    schemas: dict[str, dict[str, Any]] = {}
    types: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise WorkflowError(f"workflow {name!r}: *args/**kwargs parameters are not supported")
        if p.name in RESERVED_INPUTS:
            raise WorkflowError(
                f"workflow {name!r}: parameter {p.name!r} is reserved for Client.execute options "
                f"({', '.join(sorted(RESERVED_INPUTS))}); rename it"
            )
        annotation = hints.get(p.name, Any)
        types[p.name] = annotation
        try:
            schema = TypeAdapter(annotation).json_schema()
        except Exception:
            schema = {}
        if p.default is not inspect.Parameter.empty:
            try:
                schema["default"] = codec.to_json_value(p.default, where=f"default of {p.name!r}")
            except OutputError as exc:
                raise WorkflowError(f"workflow {name!r}: {exc}") from None
        schemas[p.name] = schema
    return schemas, types


def _build(fn: Callable[..., Any], name: str, schedule: str | None, registry: Registry) -> Workflow:
    schemas, types = _input_schemas(fn, name)
    params = inspect.signature(fn).parameters
    builder = _Builder(name, params)
    refs = {p: InputRef(p, types[p]) for p in params}
    token = current_builder.set(builder)
    try:
        returned = fn(**refs)
    except WorkflowError as exc:
        if str(exc).startswith(f"workflow {name!r}"):
            raise
        raise WorkflowError(f"workflow {name!r}: {exc}") from None
    finally:
        current_builder.reset(token)
    if not builder.calls:
        raise WorkflowError(f"workflow {name!r} calls no node; call @af.node functions in its body")
    output = _to_template(returned, f"workflow {name!r} output", [])
    if schedule is not None:
        _check_cron(schedule, name)
    made = Workflow(
        name,
        builder.calls,
        schemas,
        output,
        module=fn.__module__,
        description=inspect.getdoc(fn) or "",
        schedule=schedule,
        input_types=types,
    )
    registry.add_workflow(made)
    return made


def _check_cron(expr: str, name: str) -> None:
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise WorkflowError(f"workflow {name!r}: schedule {expr!r} is not a valid cron expression")


@overload
def workflow(fn: Callable[..., Any], /) -> Workflow: ...


@overload
def workflow(
    *, name: str | None = None, schedule: str | None = None, registry: Registry | None = None
) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    schedule: str | None = None,
    registry: Registry | None = None,
) -> Any:
    """Compose nodes into a workflow: ``@af.workflow`` or ``@af.workflow(name=..., schedule=...)``.

    The body runs once, now, to build the graph; it is validated before this returns.
    """

    def decorate(f: Callable[..., Any]) -> Workflow:
        if isinstance(f, (Workflow, Node)):
            raise TypeError(f"{f!r} is already decorated; decorate the plain function")
        return _build(f, name or f.__name__, schedule, registry or default_registry())

    if fn is not None:
        return decorate(fn)
    return decorate
