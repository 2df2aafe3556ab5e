"""Prometheus metrics: counters and histograms recorded where things happen, gauges
computed from the store when scraped.

Workers record node attempts by type and outcome (``autoflow_node_runs_total``), their
durations (``autoflow_node_duration_seconds``), retries (``outcome="retrying"``) and runs
finished by status, through :class:`MetricsObserver` (the engine's observer hook). The API
records runs it started by trigger, HTTP requests by route and code, and rejected webhook
deliveries. At scrape time :class:`StoreCollector` reads the queues from the store (queue
depths, runs and nodes by state), so no process keeps gauges of its own.

Process workers: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) before the worker
starts (``autoflow worker`` does it for ``--kind process`` when it is unset); each scrape
then merges every process's files. Throughput and error rate are PromQL over the counters::

    rate(autoflow_node_runs_total{outcome="completed"}[5m])
    sum(rate(autoflow_node_runs_total{outcome="failed"}[5m])) / sum(rate(autoflow_node_runs_total[5m]))
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from autoflow.models import QueueStats, RunStatus

__all__ = [
    "MetricsObserver",
    "StoreCollector",
    "http_request",
    "render",
    "router",
    "run_started",
    "serve_metrics",
    "webhook_rejected",
]

router = APIRouter(tags=["metrics"])

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_lock = threading.Lock()
_made: dict[str, Any] = {}
M = TypeVar("M")


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _metric(name: str, make: Callable[[], M]) -> M:
    """Metrics are created on first use (never at import) and once per process."""
    with _lock:
        if name not in _made:
            _made[name] = make()
        found: M = _made[name]
        return found


def _node_runs() -> Counter:
    return _metric(
        "node_runs",
        lambda: Counter("autoflow_node_runs", "Node attempts settled, by node type and outcome", ["type", "outcome"]),
    )


def _node_seconds() -> Histogram:
    return _metric(
        "node_seconds",
        lambda: Histogram(
            "autoflow_node_duration_seconds", "Node attempt duration (claim to outcome)", ["type"], buckets=_BUCKETS
        ),
    )


def _runs_finished() -> Counter:
    return _metric(
        "runs_finished", lambda: Counter("autoflow_runs_finished", "Runs that ended in a worker, by status", ["status"])
    )


def _runs_started() -> Counter:
    return _metric(
        "runs_started", lambda: Counter("autoflow_runs_started", "Runs started by the API, by trigger", ["trigger"])
    )


def _http() -> Counter:
    return _metric(
        "http",
        lambda: Counter(
            "autoflow_http_requests", "API requests by method, route and status", ["method", "route", "code"]
        ),
    )


def _rejected() -> Counter:
    return _metric(
        "rejected", lambda: Counter("autoflow_webhooks_rejected", "Webhook deliveries that failed verification")
    )


def run_started(trigger: str, count: int = 1) -> None:
    """``count`` runs were started by ``trigger``."""
    if count > 0:
        _runs_started().labels(trigger).inc(count)


def http_request(method: str, route: str, code: int) -> None:
    _http().labels(method, route, str(code)).inc()


def webhook_rejected() -> None:
    _rejected().inc()


class MetricsObserver:
    """The engine's observer, recording into Prometheus (pass it to ``Worker(observer=...)``)."""

    def node_done(self, node_type: str, outcome: str, seconds: float) -> None:
        _node_runs().labels(node_type, outcome).inc()
        _node_seconds().labels(node_type).observe(seconds)

    def run_finished(self, status: RunStatus) -> None:
        _runs_finished().labels(status.value).inc()


class StoreCollector(Collector):
    """Gauges read from the store at scrape time: queue depths and runs/nodes by state."""

    def __init__(self, stats: Callable[[], QueueStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.stats()
        for name, doc, attr in (
            ("autoflow_queue_waiting", "Items waiting in each queue (runs pending, nodes queued)", "waiting"),
            ("autoflow_queue_active", "Items active in each queue (runs running, nodes running)", "active"),
            ("autoflow_queue_completed", "Completed items retained by the store, per queue", "completed"),
            ("autoflow_queue_failed", "Failed items retained by the store, per queue", "failed"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            family.add_metric(["workflow"], getattr(stats.workflow, attr))
            family.add_metric(["node"], getattr(stats.node, attr))
            yield family


def render(stats: Callable[[], QueueStats] | None) -> bytes:
    """The text exposition: this process's metrics (or every process's, in multiprocess
    mode) and the store's gauges."""
    if _multiprocess():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if stats is not None:
        extra = CollectorRegistry()
        extra.register(StoreCollector(stats))
        text += generate_latest(extra)
    return text


def serve_metrics(port: int, stats: Callable[[], QueueStats] | None, host: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``port`` in a daemon thread (workers: MONITORING_PORT)."""
    registry = CollectorRegistry()
    if _multiprocess():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for made in (_node_runs, _node_seconds, _runs_finished):
            registry.register(made())
    if stats is not None:
        registry.register(StoreCollector(stats))
    return start_http_server(port, addr=host, registry=registry)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    openapi_extra={"security": []},  # scraped without a token: counts only, no tenant data
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: counters, histograms and the store's queue gauges."""
    client = request.app.state.autoflow.client
    body = await run_in_threadpool(render, client.stats)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
