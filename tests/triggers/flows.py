"""Workflows the trigger tests start (importable by consumer and scheduler subprocesses).

Names carry a ``trg_`` prefix: they are unique in the default registry of a test session."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import autoflow as af


class Change(BaseModel):
    op: str
    new: dict[str, int] | None = None  # every column an int: rows that are not are refused


@af.node
def stamp(slot: str = "") -> str:
    return slot


@af.node
def seen(event: dict[str, Any] | None) -> dict[str, Any]:
    event = event or {}
    return {"op": event.get("op"), "new": event.get("new"), "old": event.get("old")}


@af.workflow(name="trg_tick")
def tick(slot: str = ""):
    """One node: returns the slot it was started for."""
    return stamp(slot)


@af.workflow(name="trg_event")
def on_event(event: dict[str, Any] | None = None):
    """One node: returns what changed."""
    return seen(event)


@af.workflow(name="trg_nightly", schedule="30 1 * * *", timezone="America/New_York")
def nightly(slot: str = ""):
    """Declared with a schedule: a ticker syncs it into the store."""
    return stamp(slot)


@af.node
def operation(change: Change) -> str:
    return change.op


@af.workflow(name="trg_strict")
def strict(event: Change):
    """Typed input: an event that does not fit is refused."""
    return operation(event)
