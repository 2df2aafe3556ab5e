"""Rate limits and concurrency limits: a node over its limit waits in the queue's schedule.

A node over its limit is deferred (back to ``queued`` with an eta, the same attempt)
instead of blocking this worker; a concurrency slot it took is held by the lease tracker
while the node runs and released when it ends.
"""

from __future__ import annotations

import random
import time
from typing import Any

from autoflow.context import LogBuffer, log_record
from autoflow.define.definition import NodeSpec
from autoflow.define.node import Node
from autoflow.engine.heartbeat import LeaseTracker
from autoflow.engine.settle import Settle, once
from autoflow.models import LogLevel
from autoflow.store.base import Claim, Store

__all__ = ["Throttle"]


class Throttle:
    """The limits step of :class:`~autoflow.engine.executor.Executor`, and what it needs
    from it (its store, lease and lease tracker)."""

    store: Store
    lease: float
    tracker: LeaseTracker

    def _limits(self, claim: Claim, node: Node[Any, Any], spec: NodeSpec, token: str, logs: LogBuffer) -> Settle | None:
        """Rate limit and concurrency: a node over its limit goes back to the queue with a
        delay instead of blocking this worker."""
        rate = spec.options.rate
        wait = 0.0
        why = ""
        if rate is not None:
            wait = self.store.take_token(rate.key or node.key, rate.count, rate.per)
            why = f"rate limit {spec.options.rate_limit}"
        if not wait and spec.options.concurrency:
            if not self.store.acquire_slot(node.key, token, spec.options.concurrency, self.lease):
                wait, why = 0.1 + random.random() * 0.4, f"concurrency limit {spec.options.concurrency}"
            else:
                self.tracker.hold_slot(claim.run_id, claim.node_id, node.key)
        if not wait:
            return None
        note = log_record(LogLevel.DEBUG, f"{why}: trying again in {wait:.2f}s", claim.node_id)
        until = time.time() + wait
        return once(
            "deferred", self.store.defer, claim.run_id, claim.node_id, token, until, False, [*logs.drain(), note]
        )
