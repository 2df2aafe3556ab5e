"""``@workflow``: compose nodes into a networkx DAG, validate it, (de)serialise it.

The workflow body runs once, at decoration time, with references in place of values (see
``building.py``); the result is a :class:`Workflow` (``dag.py``, re-exported here): node
calls, a graph, input schemas and an output template, in the JSON definition format of
``definition.py``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, overload

from pydantic import TypeAdapter

from autoflow import codec
from autoflow.define.building import Builder, InputRef, to_template
from autoflow.define.dag import Workflow, _check_cron, _check_timezone
from autoflow.define.node import Node, current_builder
from autoflow.define.registry import Registry, default_registry
from autoflow.errors import OutputError, WorkflowError

__all__ = ["RESERVED_INPUTS", "Workflow", "WorkflowRegistry", "workflow"]

#: Options of ``Client.execute``; a workflow parameter may not use these names.
RESERVED_INPUTS = frozenset(
    {"priority", "user_id", "organization_id", "trigger", "trigger_data", "idempotency_key", "display", "inputs"}
)


#: A registry of nodes and workflows, as the engine, the client and the CLI use it.
WorkflowRegistry = Registry[Node[Any, Any], Workflow]


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


def _build(
    fn: Callable[..., Any], name: str, schedule: str | None, registry: Registry[Any, Any], timezone: str | None = None
) -> Workflow:
    schemas, types = _input_schemas(fn, name)
    params = inspect.signature(fn).parameters
    builder: Builder[Workflow] = Builder(name, params)
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
    output = to_template(returned, f"workflow {name!r} output", [])
    if schedule is not None:
        _check_cron(schedule, name)
    if timezone is not None:
        _check_timezone(timezone, schedule, name)
    made = Workflow(
        name,
        builder.calls,
        schemas,
        output,
        module=fn.__module__,
        description=inspect.getdoc(fn) or "",
        schedule=schedule,
        input_types=types,
        timezone=timezone,
    )
    registry.add_workflow(made)
    return made


@overload
def workflow(fn: Callable[..., Any], /) -> Workflow: ...


@overload
def workflow(
    *,
    name: str | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    registry: Registry[Any, Any] | None = None,
) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    registry: Registry[Any, Any] | None = None,
) -> Any:
    """Compose nodes into a workflow: ``@af.workflow`` or ``@af.workflow(name=..., schedule=...)``.

    The body runs once, now, to build the graph; it is validated before this returns.
    ``schedule`` is a cron expression evaluated in ``timezone`` (IANA name, default UTC);
    a ticker (``autoflow scheduler MODULE``, an embedded ``af.Client()``) fires it, see
    docs/schedules.md.
    """

    def decorate(f: Callable[..., Any]) -> Workflow:
        if isinstance(f, (Workflow, Node)):
            raise TypeError(f"{f!r} is already decorated; decorate the plain function")
        return _build(f, name or f.__name__, schedule, registry or default_registry(), timezone)

    if fn is not None:
        return decorate(fn)
    return decorate
