"""Trigger nodes: the first node of a definition, carrying what started the run.

A run records what started it (``trigger``: ``manual``, ``webhook``, ``schedule``,
``database``) and the JSON the trigger carried (``trigger_data``), see
``Client.execute(..., trigger=..., trigger_data=...)``. Each trigger node returns::

    {"trigger": "webhook", "data": <trigger_data>, "inputs": {...}, "user_id": ..., "organization_id": ...}

so later nodes read it as ``{"$expr": "nodes.webhook.data.body.email"}``. Their config
(the webhook's path and methods, the cron expression, the table and events) is what the
service's webhook router, scheduler and database listener read to start runs; it is
checked when the definition is built. A trigger node run by hand (a manual test run)
passes on whatever that run carried, as n8n's "test" executions do.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, Field

from autoflow.context import Context, TriggerInfo
from autoflow.nodes.base import NodeError, builtin

__all__ = ["database_trigger", "manual_trigger", "schedule_trigger", "webhook_trigger"]


def _payload(trigger: TriggerInfo) -> dict[str, Any]:
    return {
        "trigger": trigger.kind,
        "data": trigger.data,
        "inputs": trigger.inputs or {},
        "user_id": trigger.user_id,
        "organization_id": trigger.organization_id,
    }


def _expect(ctx: Context, kinds: tuple[str, ...], strict: bool, node_type: str) -> dict[str, Any]:
    trigger = ctx.trigger
    if strict and trigger.kind not in kinds:
        raise NodeError(
            f"{node_type} {ctx.node_id!r}: the run was started by {trigger.kind!r}, not by {' or '.join(kinds)} "
            "(strict=true)",
            retryable=False,
        )
    return _payload(trigger)


@builtin("manual_trigger", retries=0)
def manual_trigger(ctx: Context) -> dict[str, Any]:
    """Start of a workflow run by hand (``client.execute``, the REST API's execute):
    passes on the run's inputs and trigger data."""
    return _payload(ctx.trigger)


def _path(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_\-./:{}]{1,200}", value.strip("/") or "x"):
        raise ValueError("a webhook path holds letters, digits and - _ . / : { } only")
    return value


Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


@builtin("webhook_trigger", retries=0)
def webhook_trigger(
    ctx: Context,
    path: Annotated[str | None, AfterValidator(_path)] = None,
    methods: list[Method] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Start of a run by an HTTP request: ``data`` is the request as the webhook endpoint
    stored it (method, path, headers, query, body). ``path``/``methods`` declare the
    endpoint; ``strict`` refuses runs started otherwise."""
    return _expect(ctx, ("webhook",), strict, "webhook_trigger")


def _cron(value: str | None) -> str | None:
    if value is not None and not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a valid cron expression")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


@builtin("schedule_trigger", retries=0)
def schedule_trigger(
    ctx: Context,
    cron: Annotated[str | None, AfterValidator(_cron)] = None,
    interval_seconds: Annotated[float | None, Field(gt=0)] = None,
    timezone: Annotated[str, AfterValidator(_zone)] = "UTC",
    strict: bool = False,
) -> dict[str, Any]:
    """Start of a run by a schedule (a cron expression in ``timezone``, or an interval):
    ``data`` is what the scheduler recorded (e.g. the slot it fired for)."""
    return _expect(ctx, ("schedule",), strict, "schedule_trigger")


Event = Literal["insert", "update", "delete"]


def _table(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?", value):
        raise ValueError("a table name is an identifier, optionally schema-qualified (schema.table)")
    return value


@builtin("database_trigger", retries=0)
def database_trigger(
    ctx: Context,
    table: Annotated[str, AfterValidator(_table)],
    events: list[Event] | None = None,
    connection: str | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Start of a run by a row change in ``table`` (``events``: insert/update/delete;
    ``connection`` names the credential of the database URL): ``data`` is the change."""
    return _expect(ctx, ("database",), strict, "database_trigger")
