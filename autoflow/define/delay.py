"""Control-flow helpers for workflow bodies: durable delays.

``af.delay(value, seconds=...)`` (or ``until=``) is a node that waits without holding a
worker: the engine parks it in the queue's schedule (a Huey eta) and it survives worker
restarts. Branches (``when=``), trigger rules, ``.map`` and sub-workflows are written on
nodes and workflows themselves (see docs/control-flow.md).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from autoflow.context import Context, Defer
from autoflow.define.building import Ref
from autoflow.define.node import Node, NodeOptions
from autoflow.define.registry import builtin_registry
from autoflow.errors import WorkflowError

__all__ = ["DELAY_TYPE", "delay"]

DELAY_TYPE = "autoflow.delay"


def _delay(ctx: Context, value: Any = None, seconds: float | None = None, until: datetime | None = None) -> Any:
    """Pass ``value`` on once the delay is over (see :func:`delay`)."""
    now = time.time()
    if until is not None:
        target = until.timestamp()
    elif ctx.wake_at is not None:  # woken up after an earlier deferral: keep its deadline
        target = ctx.wake_at
    else:
        target = now + float(seconds or 0.0)
    if now < target - 0.001:
        raise Defer(target)
    return value


_delay_node: Node[Any, Any] = Node(_delay, NodeOptions(name="delay", type=DELAY_TYPE, retries=0))
builtin_registry().add_node(_delay_node)


def delay(value: Any = None, *, seconds: float | None = None, until: datetime | None = None) -> Any:
    """Inside a workflow: a node that passes ``value`` on after ``seconds`` (counted from
    when the delay starts) or at the datetime ``until``, holding no worker meanwhile.

    Example::

        @af.workflow
        def reminder(user: str):
            draft = write(user)
            return send(af.delay(draft, seconds=3600))
    """
    if (seconds is None) == (until is None):
        raise WorkflowError("af.delay() needs exactly one of seconds= or until=")
    # Constants are checked now; references (inputs, outputs) when the delay runs.
    if not isinstance(seconds, (Ref, type(None))) and (
        not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0
    ):
        raise WorkflowError(f"af.delay(seconds=...) needs a number >= 0, got {seconds!r}")
    if not isinstance(until, (Ref, type(None), datetime)):
        raise WorkflowError(f"af.delay(until=...) needs a datetime, got {until!r}")
    return _delay_node(value, seconds=seconds, until=until)
