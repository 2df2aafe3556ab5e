"""Custom processors: the seed's ``registerNodeProcessor({nodeType, process, validate})``.

A processor is a node type with a pydantic config model. Its fields become the node's
parameters (so a JSON definition writes them under ``config``), each checked when the
definition is built; when all of them are constants the model (its validators too) and
the processor's own ``validate`` run then as well -- before anything is stored or queued.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from autoflow.context import Context
from autoflow.define.node import Node, NodeOptions
from autoflow.define.registry import Registry, default_registry
from autoflow.errors import InputError, WorkflowError
from autoflow.nodes.base import NodeError

__all__ = ["Processor", "register_processor"]


class Processor(Node[Any, Any]):
    """A node made by :func:`register_processor`: config model + process function."""

    config_model: type[BaseModel]
    check: Callable[[Any], Any] | None

    def check_config(self, values: Mapping[str, Any], *, pending: frozenset[str] = frozenset()) -> None:
        super().check_config(values, pending=pending)
        if not pending - {"data"}:  # every config field is a constant (or its default)
            self.build_config({k: v for k, v in values.items() if k != "data"}, InputError)

    def build_config(self, fields: Mapping[str, Any], error: type[Exception]) -> BaseModel:
        try:
            config = self.config_model.model_validate(dict(fields))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "config"
            raise error(f"processor {self.key!r}, {where}: {first['msg']}") from None
        if self.check is not None:
            verdict = self.check(config)
            if verdict is False:
                raise error(f"processor {self.key!r}: its validate() refused the config")
        return config


def register_processor(
    node_type: str,
    process: Callable[..., Any],
    config: type[BaseModel],
    *,
    validate: Callable[[Any], Any] | None = None,
    registry: Registry[Any, Any] | None = None,
    **options: Any,
) -> Processor:
    """Register node type ``node_type``: ``process(config, data, ctx)`` (or
    ``process(config, data)``) runs it, ``config`` (a pydantic model) describes its
    configuration, ``validate(config)`` may refuse it (return False or raise ValueError).
    A result shaped like the seed's ``{"success": bool, "data": ...}`` is unwrapped: an
    unsuccessful one fails the node. Other options (retries, timeout, ...) are node options.

    Example::

        class Crm(BaseModel):
            base_url: str
            fields: list[str] = ["email"]

        def lookup(config: Crm, data: dict, ctx: af.Context) -> dict: ...

        af.nodes.register_processor("crm_lookup", lookup, Crm)
        # {"id": "who", "type": "crm_lookup", "config": {"base_url": "https://crm"}}
    """
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise TypeError(f"register_processor({node_type!r}): config must be a pydantic model class, got {config!r}")
    if "data" in config.model_fields:
        raise WorkflowError(f"processor {node_type!r}: 'data' is the node's input; rename that config field")
    wants_ctx = len(inspect.signature(process).parameters) >= 3
    holder: dict[str, Processor] = {}

    def run(ctx: Context, data: Any = None, **fields: Any) -> Any:
        cfg = holder["node"].build_config(fields, NodeError)
        result = process(cfg, data, ctx) if wants_ctx else process(cfg, data)
        if isinstance(result, dict) and set(result) <= {"success", "data", "error"} and "success" in result:
            if not result["success"]:
                raise NodeError(f"processor {node_type!r}: {result.get('error') or 'unsuccessful'}", retryable=False)
            return result.get("data")
        return result

    params = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
        inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any),
    ]
    annotations: dict[str, Any] = {"ctx": Context, "data": Any}
    for name, field in config.model_fields.items():
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Any))
        annotations[name] = Any  # the model checks the fields together (and their own types)
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = annotations
    run.__name__ = getattr(process, "__name__", node_type)
    run.__qualname__ = getattr(process, "__qualname__", node_type)
    run.__module__ = getattr(process, "__module__", __name__)
    run.__doc__ = process.__doc__
    try:
        opts = NodeOptions(type=node_type, **options)
    except TypeError as exc:
        raise TypeError(f"register_processor({node_type!r}): {exc}") from None
    made = Processor(run, opts)
    made.config_model = config
    made.check = validate
    holder["node"] = made
    (registry or default_registry()).add_node(made)
    return made
