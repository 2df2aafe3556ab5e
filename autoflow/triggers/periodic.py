"""A Huey periodic task that starts a workflow once per slot, however many consumers run it.

Plain ``@huey.periodic_task`` fires once *per consumer*: every consumer started with
periodic tasks enabled (the default) checks the schedule each minute and enqueues its own
copy (coleifer/huey#716, #567; Huey's advice is to run one consumer with periodic tasks
and the others with ``-n``). With three replicas of a consumer on Kubernetes, a nightly
job runs three times. :func:`huey_periodic` keeps Huey's mechanism but names each
firing: the task starts the workflow's run under the idempotency key
``huey:<task>:<slot>``, so the copies enqueued by every consumer start one run per slot.

The slot is the latest cron slot at or before the moment the task runs (within an hour:
a task delayed longer does nothing); a consumer enqueues the task once per slot, in the
first check after it (Huey checks every 60 s, so crons finer than a minute need
``Scheduler.periodic_task_seconds`` lowered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from autoflow.define.workflow import Workflow
from autoflow.triggers.base import Starter, start_run
from autoflow.triggers.spec import Spec, slot_key, to_datetime

__all__ = ["huey_periodic"]


def huey_periodic(
    huey: Any,
    client: Starter | Callable[[], Starter],
    workflow: Workflow | str,
    *,
    cron: str,
    timezone: str = "UTC",
    inputs: dict[str, Any] | None = None,
    slot_input: str | None = None,
    name: str | None = None,
    grace: float = 120.0,
    **task_options: Any,
) -> Any:
    """Register on ``huey`` a periodic task starting ``workflow`` once per ``cron`` slot.

    ``client`` is an ``af.Client`` or a function making one (called once per process, on
    the first firing: nothing connects at import). Returns Huey's task wrapper; extra
    keyword arguments go to ``huey.periodic_task``.

    Example::

        huey = RedisHuey("app", url=REDIS_URL)
        nightly = huey_periodic(huey, lambda: af.Client(REDIS_URL, workers=0), etl,
                                cron="0 2 * * *", timezone="Europe/Paris")
    """
    spec = Spec.make(cron=cron, timezone=timezone)
    flow = workflow.name if isinstance(workflow, Workflow) else workflow
    task_name = name or f"autoflow_periodic_{flow}"
    lock = threading.Lock()
    state: dict[str, Any] = {"enqueued": None, "client": None}

    def due(_timestamp: Any) -> bool:
        # Huey passes a naive local-or-UTC time of its own; the slot is computed from the
        # real clock instead. Enqueue once per slot per process, shortly after the slot.
        slot = spec.latest_at_or_before(time.time(), horizon=grace)
        with lock:
            if slot is None or slot == state["enqueued"]:
                return False
            state["enqueued"] = slot
        return True

    def starter() -> Starter:
        with lock:
            if state["client"] is None:
                state["client"] = client if hasattr(client, "execute") else client()
            made: Starter = state["client"]
            return made

    def fire() -> str | None:
        now = time.time()
        slot = spec.latest_at_or_before(now, horizon=grace + 3600)
        if slot is None:
            return None
        start = starter()
        values = dict(inputs or {})
        when = to_datetime(slot, timezone)
        if slot_input:
            values[slot_input] = when.isoformat()
        data = {"huey_task": task_name, "slot": slot_key(slot), "scheduled_for": when.isoformat(), "reason": "huey"}
        key = f"huey:{task_name}:{slot_key(slot)}"
        return start_run(start, key, flow, values, trigger="schedule", trigger_data=data)

    fire.__name__ = fire.__qualname__ = task_name
    return huey.periodic_task(due, name=task_name, **task_options)(fire)
