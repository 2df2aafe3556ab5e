"""``@node``: plain functions become workflow nodes.

A :class:`Node` runs its function when called outside a workflow, so it can be tried
in a cell or a unit test; inside a ``@workflow`` body the same call adds a vertex to the
graph and returns a reference to the node's future output. Its options
(:class:`NodeOptions`, :class:`Backoff`, :class:`RateLimit`) live in ``options.py`` and
are re-exported here.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from autoflow import codec
from autoflow.context import Context
from autoflow.define.options import ID_PATTERN, Backoff, NodeOptions, RateLimit
from autoflow.define.registry import Registry, builtin_registry, default_registry
from autoflow.errors import InputError, WorkflowError

if typing.TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")

__all__ = ["ID_PATTERN", "Backoff", "Node", "NodeOptions", "Param", "RateLimit", "node", "resolve_node"]

R = TypeVar("R")


@dataclass(frozen=True)
class Param:
    """One parameter of a node function, introspected once at decoration time."""

    name: str
    kind: inspect._ParameterKind
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty and self.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )

    @functools.cached_property
    def adapter(self) -> TypeAdapter[Any]:
        annotation = Any if self.annotation is inspect.Parameter.empty else self.annotation
        if self.kind is inspect.Parameter.VAR_POSITIONAL:
            annotation = list[annotation]  # type: ignore[valid-type]
        elif self.kind is inspect.Parameter.VAR_KEYWORD:
            annotation = dict[str, annotation]  # type: ignore[valid-type]
        return TypeAdapter(annotation)


class GraphBuilder(Protocol):
    """What a workflow under construction offers to node calls (see ``building.py``)."""

    def add_call(self, node: Node[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def add_map(
        self,
        node: Node[Any, Any],
        items: Any,
        over: str | None,
        max_parallel: int | None,
        fixed: dict[str, Any],
    ) -> Any: ...

    def add_workflow(self, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


#: The workflow being built in this context, if any (set by ``@workflow``).
current_builder: contextvars.ContextVar[GraphBuilder | None] = contextvars.ContextVar("autoflow_builder", default=None)


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is Context:
        return True
    args = typing.get_args(annotation)
    return bool(args) and Context in args and all(a in (Context, type(None)) for a in args)


class Node(Generic[P, R]):
    """A function marked with ``@af.node``.

    Calling it outside a workflow runs the function (a ``ctx`` is made up if it asks for
    one); inside a ``@af.workflow`` body the call adds a node to the graph instead.

    Example::

        @af.node(retries=1)
        def double(x: int) -> int:
            return 2 * x

        double(21)          # 42, a plain call
        double.key          # "mymodule:double", the registry key workers resolve
    """

    def __init__(self, fn: Callable[P, R], options: NodeOptions) -> None:
        if isinstance(fn, Node):
            raise TypeError(f"{fn.name!r} is already an autoflow node; decorate the function once")
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise TypeError(f"@af.node needs a function, got {fn!r}")
        self.fn = fn
        self.options = options
        self.module: str = fn.__module__
        self.qualname: str = fn.__qualname__
        self.name: str = options.name or fn.__name__
        self.key: str = options.type or options.name or f"{self.module}:{self.qualname}"
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params, self.ctx_param, self.returns = self._introspect(fn)
        functools.update_wrapper(self, fn)

    def _introspect(self, fn: Callable[..., Any]) -> tuple[dict[str, Param], str | None, Any]:
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise WorkflowError(
                f"node {self.name!r}: cannot resolve its type annotations ({exc}); "
                "define the types it names before the function"
            ) from None
        params: dict[str, Param] = {}
        ctx_param = None
        for p in inspect.signature(fn).parameters.values():
            annotation = hints.get(p.name, p.annotation)
            if _is_context_annotation(annotation):
                if ctx_param is not None:
                    raise WorkflowError(f"node {self.name!r} asks for af.Context twice")
                ctx_param = p.name
                continue
            params[p.name] = Param(p.name, p.kind, annotation, p.default)
        return params, ctx_param, hints.get("return", inspect.Parameter.empty)

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def with_options(self, **changes: Any) -> Node[P, R]:
        """A copy of this node with some options changed (``dataclasses.replace``)."""
        try:
            options = dataclasses.replace(self.options, **changes)
        except TypeError as exc:
            raise TypeError(f"{self.name}.with_options: {exc}") from None
        except WorkflowError as exc:
            raise WorkflowError(f"node {self.name!r}: {exc}") from None
        clone = Node(self.fn, options)
        clone.key = self.key  # the registry key never changes with per-call options
        return clone

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = current_builder.get()
        if builder is not None:
            return builder.add_call(self, args, kwargs)
        if self.ctx_param and self.ctx_param not in kwargs:
            kwargs[self.ctx_param] = Context.local(self.name)
        return self.fn(*args, **kwargs)

    def map(self, items: Any, *, over: str | None = None, max_parallel: int | None = None, **fixed: Any) -> Any:
        """Inside a workflow: run this node once per item of ``items`` (a list known only at
        run time), in parallel, at most ``max_parallel`` at once. ``over`` names the
        parameter that receives each item (default: the first one not given in ``fixed``).
        Downstream nodes receive the list of results, in item order."""
        builder = current_builder.get()
        if builder is None:
            raise TypeError(f"{self.name}.map() builds a workflow; outside one, use a loop over {self.name}()")
        return builder.add_map(self, items, over, max_parallel, dict(fixed))

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names; raise a WorkflowError naming the problem."""
        if self.ctx_param and self.ctx_param in kwargs:
            raise WorkflowError(
                f"node {self.name!r}: do not pass {self.ctx_param!r} inside a workflow; the engine injects the context"
            )
        sig = inspect.Signature([p for p in self.signature.parameters.values() if p.name != self.ctx_param])
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise WorkflowError(f"node {self.name!r}: {exc}") from None
        return dict(bound.arguments)

    def validate_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Coerce JSON inputs to the annotated types; InputError names node and parameter."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            param = self.params.get(name)
            if param is None:
                raise InputError(f"node {self.name!r} has no parameter {name!r}")
            try:
                out[name] = param.adapter.validate_python(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise InputError(
                    f"node {self.name!r}, parameter {name!r}: {first['msg']} "
                    f"(got {type(value).__name__} {_short(value, name)})"
                ) from None
        return out

    def check_config(self, values: Mapping[str, Any], *, pending: frozenset[str] = frozenset()) -> None:
        """Check arguments known when a workflow is defined (constants of its config)
        against the parameters' types: InputError names the parameter. ``pending`` names
        the arguments known only at run time (subclasses may check the rest together)."""
        self.validate_inputs(values)

    @functools.cached_property
    def _keyword_names(self) -> frozenset[str] | None:
        """The parameter names when every parameter can be passed by keyword (the usual
        case: the call needs no positional sorting), else None."""
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if all(p.kind in plain for p in self.params.values()):
            return frozenset(self.params)
        return None

    def invoke(self, values: Mapping[str, Any], ctx: Context | None) -> Any:
        """Call the function with validated parameter values (and the context)."""
        names = self._keyword_names
        if names is not None and values.keys() <= names:
            fn: Callable[..., Any] = self.fn
            if self.ctx_param:
                return fn(**values, **{self.ctx_param: ctx or Context.local(self.name)})
            return fn(**values)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, param in self.params.items():
            if name not in values:
                continue
            value = values[name]
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            else:
                kwargs[name] = value
        if self.ctx_param:
            kwargs[self.ctx_param] = ctx or Context.local(self.name)
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Node {self.key}>"


def resolve_node(registry: Registry[Any, Any], key: str) -> Node[Any, Any]:
    """The node of type ``key``: a built-in (:func:`builtin_registry`), else the one in
    ``registry`` (NotFoundError says how to make it known)."""
    builtins = builtin_registry()
    found: Node[Any, Any] = builtins.node(key) if builtins.has_node(key) else registry.node(key)
    return found


def _short(value: Any, name: str, limit: int = 60) -> str:
    """A short, redacted rendering of a bad value for an error message."""
    if codec.is_secret_key(name):
        return codec.REDACTED
    text = codec.redact_text(
        codec.safe_str(repr(codec.redact(value)) if isinstance(value, (dict, list)) else repr(value))
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


@overload
def node(fn: Callable[P, R], /) -> Node[P, R]: ...


@overload
def node(
    *,
    name: str | None = None,
    type: str | None = None,
    retries: int = 2,
    backoff: Backoff | None = None,
    timeout: float | None = None,
    priority: int = 0,
    trigger: str = "all_success",
    rate_limit: str | tuple[str, str] | None = None,
    concurrency: int | None = None,
    retry_on: tuple[str | int, ...] | None = None,
    registry: Registry[Any, Any] | None = None,
) -> Callable[[Callable[P, R]], Node[P, R]]: ...


def node(fn: Callable[..., Any] | None = None, /, *, registry: Registry[Any, Any] | None = None, **options: Any) -> Any:
    """Mark a function as a workflow node: ``@af.node`` or ``@af.node(retries=3, ...)``.

    Options: ``name`` (node id in graphs; also the registry key when given), ``type``
    (explicit registry key), ``retries`` (default 2, i.e. 3 attempts), ``backoff``
    (:class:`Backoff`), ``timeout`` (seconds per attempt), ``priority`` (higher first),
    ``trigger`` (a :class:`TriggerRule`, e.g. ``"one_failed"`` for an error handler),
    ``rate_limit`` (``"10/s"`` or ``(key, "100/m")``, shared by all workers),
    ``concurrency`` (how many may run at once across all workers) and ``retry_on``
    (retry only errors of these type names / codes / HTTP status codes).
    The node is registered in ``registry`` (default: ``af.default_registry()``).
    """
    if options.get("backoff") is None:
        options.pop("backoff", None)
    unknown = set(options) - {f.name for f in dataclasses.fields(NodeOptions)}
    if unknown:
        raise TypeError(f"@af.node got unexpected keyword argument(s) {sorted(unknown)}")

    def decorate(f: Callable[..., Any]) -> Node[Any, Any]:
        try:
            opts = NodeOptions(**options)
        except WorkflowError as exc:
            raise WorkflowError(f"node {options.get('name') or getattr(f, '__name__', f)!r}: {exc}") from None
        made: Node[Any, Any] = Node(f, opts)
        (registry or default_registry()).add_node(made)
        return made

    if fn is not None:
        return decorate(fn)
    return decorate
