"""The :class:`Workflow`: a validated DAG of node calls, its graph, the checks of its
wiring and of its inputs, and its JSON definition (``to_dict``/``from_dict``).

``@workflow`` (``workflow.py``) builds one from a function body; ``Workflow.from_dict``
from the JSON definition format of ``definition.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import TypeAdapter, ValidationError

from autoflow import codec
from autoflow.config import Limits
from autoflow.define.building import NodeCall
from autoflow.define.definition import (
    FORMAT_VERSION,
    ID_PATTERN,
    NodeSpec,
    build_graph,
    definition_edges,
    find_cycle,
    node_children,
    parse_definition,
    sorted_json,
)
from autoflow.define.node import NodeOptions, current_builder, resolve_node
from autoflow.define.registry import Registry, default_registry
from autoflow.define.schema import check_json_schema
from autoflow.draw import dag_svg
from autoflow.errors import InputError, OutputError, WorkflowError
from autoflow.expressions import EXPRESSION_KINDS
from autoflow.templates import marker, template_refs

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["Workflow"]


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
        calls: Mapping[str, NodeCall[Workflow]],
        inputs: Mapping[str, dict[str, Any]],
        output: Any,
        *,
        module: str = "",
        description: str = "",
        schedule: str | None = None,
        input_types: Mapping[str, Any] | None = None,
        timezone: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not ID_PATTERN.match(name):
            raise WorkflowError(f"workflow name must match {ID_PATTERN.pattern}, got {name!r}")
        self.name = name
        self.calls = dict(calls)
        self.inputs = dict(inputs)
        self.output = output
        self.module = module
        self.description = description
        self.schedule = schedule
        self.timezone = timezone  # of the schedule; None is UTC
        self.input_types = dict(input_types or {})
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        self._check_templates()
        self.validate()
        try:
            text = codec.dumps_checked(sorted_json(self.to_dict()), where=f"workflow {name!r}")
        except OutputError as exc:  # a NaN or infinite constant argument, say
            raise WorkflowError(f"{exc}; constant arguments must be valid JSON") from None
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:32]

    # -- graph -----------------------------------------------------------------------------
    def _check_templates(self) -> None:
        """Expressions parse and name what they read (needed before the graph is drawn)."""
        for call in self.calls.values():
            for param, tpl in call.spec.args.items():
                try:
                    list(template_refs(tpl))
                except WorkflowError as exc:
                    raise WorkflowError(f"node {call.spec.id!r}, argument {param!r}: {exc}") from None

    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """The DAG (a ``networkx.DiGraph``), built when first asked for (drawing, the
        notebook): a worker that only runs nodes never imports networkx."""
        labels = {c.id: c.node.name for c in self.calls.values() if c.node is not None}
        return build_graph(self.name, self.specs, labels)

    @property
    def specs(self) -> dict[str, NodeSpec]:
        return {node_id: call.spec for node_id, call in self.calls.items()}

    def validate(self) -> None:
        """Check wiring, cycles, parameters and output; raise WorkflowError naming the fault."""
        for call in self.calls.values():
            spec = call.spec
            for tpl in spec.args.values():
                for kind, target in template_refs(tpl):
                    if kind == "$ref" and target not in self.calls:
                        raise WorkflowError(f"node {spec.id!r} uses the output of unknown node {target!r}")
                    if kind == "$input" and target not in self.inputs:
                        raise WorkflowError(f"node {spec.id!r} uses unknown workflow input {target!r}")
            self._validate_control(call)
            if call.workflow is not None:
                child = call.workflow
                unknown = set(spec.args) - set(child.inputs)
                missing = [n for n, s in child.inputs.items() if n not in spec.args and "default" not in s]
                if unknown or missing:
                    raise WorkflowError(
                        f"sub-workflow {spec.id!r} ({child.name}): unknown input(s) {sorted(unknown)}, "
                        f"missing input(s) {missing}"
                    )
                continue
            node = call.node
            if node is None:
                raise WorkflowError(f"node {spec.id!r} has neither a function nor a workflow")
            unknown = set(spec.args) - set(node.params)
            if unknown:
                raise WorkflowError(
                    f"node {spec.id!r} ({spec.type}) has no parameter(s) {sorted(unknown)}; "
                    f"it takes {sorted(node.params)}"
                )
            missing = [p.name for p in node.params.values() if p.required and p.name not in spec.args]
            if missing:
                raise WorkflowError(f"node {spec.id!r} ({spec.type}) is missing argument(s) {missing}")
            constants = {k: v for k, v in spec.args.items() if k != spec.map_over and not _has_markers(v)}
            try:  # config known now is checked now, before anything is stored or queued
                node.check_config(constants, pending=frozenset(spec.args) - set(constants))
            except (InputError, WorkflowError) as exc:
                raise WorkflowError(f"node {spec.id!r} ({spec.type}): {exc}") from None
        cycle = find_cycle(self.specs)
        if cycle is not None:
            raise WorkflowError(f"workflow {self.name!r} has a cycle: {' -> '.join(cycle)}")
        if _has_markers(self.output, EXPRESSION_KINDS):
            raise WorkflowError(
                f"workflow {self.name!r}: the output may not hold an expression ($expr/$template); "
                "compute the value in a node (e.g. data_transform) and return that node"
            )
        for kind, target in template_refs(self.output):
            if (kind == "$ref" and target not in self.calls) or (kind == "$input" and target not in self.inputs):
                raise WorkflowError(f"workflow {self.name!r}: output refers to unknown {target!r}")

    def _validate_control(self, call: NodeCall[Workflow]) -> None:
        spec = call.spec
        if spec.when:
            cond = self.calls.get(spec.when[0])
            if cond is None:
                raise WorkflowError(f"node {spec.id!r}: when= refers to unknown node {spec.when[0]!r}")
            returns = cond.node.returns if cond.node is not None else bool
            if returns is not bool and bool not in typing.get_args(returns):
                raise WorkflowError(
                    f"node {spec.id!r}: when= needs a node that returns bool, but {cond.id!r} does not "
                    "(annotate it `-> bool`)"
                )
        if spec.map_over and (call.node is None or spec.map_over not in call.node.params):
            raise WorkflowError(f"node {spec.id!r}: .map over unknown parameter {spec.map_over!r}")
        if spec.workflow and call.workflow is None:
            raise WorkflowError(f"node {spec.id!r}: sub-workflow {spec.workflow[0]!r} is unknown")

    @property
    def conditions(self) -> set[str]:
        """Ids of nodes used in when=: their outputs must be booleans."""
        return {c.spec.when[0] for c in self.calls.values() if c.spec.when}

    def subworkflows(self) -> dict[str, Workflow]:
        """Every workflow called inside this one (recursively), by digest."""
        found: dict[str, Workflow] = {}
        for call in self.calls.values():
            if call.workflow is not None:
                found[call.workflow.digest] = call.workflow
                found.update(call.workflow.subworkflows())
        return found

    # -- inputs ----------------------------------------------------------------------------
    def validate_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check workflow inputs; return them as JSON with defaults applied, or raise InputError."""
        unknown = set(values) - set(self.inputs)
        if unknown:
            raise InputError(
                f"workflow {self.name!r} has no input(s) {sorted(unknown)}; it takes {sorted(self.inputs) or 'none'}"
            )
        out: dict[str, Any] = {}
        for name, schema in self.inputs.items():
            if name not in values:
                if "default" not in schema:
                    raise InputError(f"workflow {self.name!r}: missing required input {name!r}")
                out[name] = schema["default"]
                continue
            value = values[name]
            if name in self.input_types:
                adapter = self._adapters.get(name) or TypeAdapter(self.input_types[name])
                self._adapters[name] = adapter
                try:
                    value = adapter.validate_python(value)
                except ValidationError as exc:
                    raise InputError(
                        f"workflow {self.name!r}, input {name!r}: {exc.errors()[0]['msg']} "
                        f"(got {type(values[name]).__name__})"
                    ) from None
                except RecursionError:
                    raise InputError(f"workflow {self.name!r}, input {name!r} is nested too deeply") from None
            else:
                problem = check_json_schema(value, schema, reveal=not codec.is_secret_key(name))
                if problem:
                    raise InputError(f"workflow {self.name!r}, input {name!r}: {codec.redact_text(problem)}")
            try:
                out[name] = codec.to_json_value(value, where=f"workflow {self.name!r}, input {name!r}")
            except OutputError as exc:
                raise InputError(str(exc)) from None
        return out

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON definition: name, version, inputs, nodes, edges, output."""
        edges, configs = definition_edges(self.specs)
        out_marker = marker(self.output)
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
                    **c.spec.extras(),
                }
                for c in self.calls.values()
            ],
            "edges": edges,
            "output": out_marker[1] if out_marker and out_marker[0] == "$ref" else self.output,
        }
        children = {c.workflow.name: c.workflow.to_dict() for c in self.calls.values() if c.workflow}
        if children:
            data["workflows"] = children
        if self.description:
            data["description"] = self.description
        if self.schedule:
            data["schedule"] = self.schedule
        if self.timezone:
            data["timezone"] = self.timezone
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], registry: Registry[Any, Any] | None = None, *, limits: Limits | None = None
    ) -> Workflow:
        """Build (and validate) a workflow from its JSON definition, resolving node types
        through ``registry`` (default: the default registry). Anything malformed raises
        :class:`WorkflowError` naming what is wrong, never a bare ``TypeError``."""
        try:
            return cls._from_dict(data, registry or default_registry(), limits or Limits(), depth=0)
        except WorkflowError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
            name = data.get("name") if isinstance(data, Mapping) else None
            raise WorkflowError(
                f"workflow {name!r}: malformed definition ({type(exc).__name__}: {codec.safe_str(exc)})"
            ) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], registry: Registry[Any, Any], limits: Limits, depth: int) -> Workflow:
        if depth > 16:
            raise WorkflowError("sub-workflows are nested more than 16 levels deep")
        specs, output = parse_definition(data, limits)
        if isinstance(output, str):
            if output not in specs:
                raise WorkflowError(f"workflow {data.get('name')!r}: output node {output!r} does not exist")
            output = {"$ref": output}
        inputs = data.get("inputs") or {}
        if not isinstance(inputs, Mapping) or not all(isinstance(v, Mapping) for v in inputs.values()):
            raise WorkflowError("'inputs' must map each input name to a JSON schema object")
        children = data.get("workflows") or {}
        if not isinstance(children, Mapping):
            raise WorkflowError("'workflows' must map sub-workflow names to their definitions")
        schedule = data.get("schedule")
        if schedule is not None:
            _check_cron(schedule, str(data.get("name", "")))
        given = {n.get("id"): n.get("options") or {} for n in data.get("nodes") or [] if isinstance(n, Mapping)}
        timezone = data.get("timezone")
        if timezone is not None:
            _check_timezone(timezone, schedule, str(data.get("name", "")))
        calls: dict[str, NodeCall[Workflow]] = {}
        for sid, spec in specs.items():
            if spec.workflow is None:
                node = resolve_node(registry, spec.type)
                # The node's own defaults (e.g. an error handler's trigger), then what the definition says.
                merged = NodeOptions.from_dict(
                    {**node.options.to_dict(), **given.get(sid, {})}, f"node {sid!r} options"
                )
                calls[sid] = NodeCall(dataclasses.replace(spec, options=merged), node)
                continue
            name, digest = spec.workflow
            if name in children:
                child = cls._from_dict(children[name], registry, limits, depth + 1)
            else:
                child = registry.workflow(name)
            if child.digest != digest:
                raise WorkflowError(
                    f"sub-workflow {sid!r}: workflow {name!r} has changed since this definition was made "
                    f"(digest {child.digest} != {digest})"
                )
            calls[sid] = NodeCall(spec, workflow=child)
        return cls(
            str(data.get("name", "")),
            calls,
            {k: dict(v) for k, v in inputs.items()},
            output,
            module=str(data.get("module", "")),
            description=str(data.get("description", "")),
            schedule=schedule,
            timezone=timezone,
        )

    # -- misc ------------------------------------------------------------------------------
    @property
    def node_modules(self) -> set[str]:
        """Modules defining the nodes of this workflow and of its sub-workflows."""
        modules = {call.node.module for call in self.calls.values() if call.node is not None}
        for child in self.subworkflows().values():
            modules |= child.node_modules
        return modules

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside another workflow's body: run this one as a sub-workflow node."""
        builder = current_builder.get()
        if builder is None:
            raise TypeError(
                f"workflow {self.name!r} is not called directly; run it with "
                f"af.Client().execute({self.name}, ...), or call it inside another @af.workflow "
                "to run it as a sub-workflow"
            )
        return builder.add_workflow(self, args, kwargs)

    def to_svg(self) -> str:
        """The DAG as SVG text (no graphviz needed)."""
        return dag_svg(self.graph, title=self.name)

    def _repr_svg_(self) -> str:
        return self.to_svg()

    def __repr__(self) -> str:
        edges = sum(len(targets) for targets in node_children(self.specs).values())
        return f"<Workflow {self.name} nodes={len(self.calls)} edges={edges}>"


def _has_markers(template: Any, kinds: tuple[str, ...] = ("$ref", "$input", *EXPRESSION_KINDS)) -> bool:
    found = marker(template)
    if found:
        return found[0] in kinds
    if isinstance(template, dict):
        return any(_has_markers(v, kinds) for v in template.values())
    if isinstance(template, list):
        return any(_has_markers(v, kinds) for v in template)
    return False


def _check_cron(expr: str, name: str) -> None:
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise WorkflowError(f"workflow {name!r}: schedule {expr!r} is not a valid cron expression")


def _check_timezone(tz: str, schedule: str | None, name: str) -> None:
    if schedule is None:
        raise WorkflowError(f"workflow {name!r}: timezone={tz!r} needs a schedule= to apply to")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise WorkflowError(
            f"workflow {name!r}: timezone {tz!r} is not a known IANA time zone (e.g. 'America/Sao_Paulo')"
        ) from None
