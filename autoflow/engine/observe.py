"""The observer hook: how workers tell a metrics system what they did.

The executor calls :meth:`Observer.node_done` once per node attempt that it settled, and
the worker calls :meth:`Observer.run_finished` when a run ends there. The engine ships no
implementation: ``autoflow.server.metrics.MetricsObserver`` records them in Prometheus.
"""

from __future__ import annotations

from typing import Protocol

from autoflow.models import RunStatus

__all__ = ["OUTCOMES", "Observer"]

#: The store transition that settled an attempt -> the outcome reported.
OUTCOMES = {
    "complete": "completed",
    "fail": "failed",  # "retrying" when the transition was given a retry time
    "cancel_node": "cancelled",
    "defer": "deferred",
    "expand": "expanded",
    "start_child": "waiting",
}


class Observer(Protocol):
    """Receives what workers did (implementations must be quick and never raise)."""

    def node_done(self, node_type: str, outcome: str, seconds: float) -> None:
        """A node attempt ended: ``outcome`` is one of the values of :data:`OUTCOMES` or
        ``retrying``; ``seconds`` from claim to the recorded outcome."""

    def run_finished(self, status: RunStatus) -> None:
        """A run ended with ``status`` in this worker."""
