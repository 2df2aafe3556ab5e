"""Prometheus metrics: the observer hook in workers (threads, and process workers in
multiprocess mode), store gauges at scrape time, the API's /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import autoflow as af
from autoflow.define.registry import default_registry
from autoflow.engine.backend import open_backend
from autoflow.engine.worker import Worker
from autoflow.server.metrics import MetricsObserver, render
from tests.conftest import free_port
from tests.server import flows
from tests.server.conftest import Api

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition: (sample name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def observed(settings: af.Settings, tmp_path: Path) -> Iterator[af.Client]:
    """A thread worker with the metrics observer, and a client submitting to it."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    backend = open_backend(url, settings)
    worker = Worker(backend, default_registry(), settings, workers=2, observer=MetricsObserver())
    worker.start()
    client = af.Client(url, settings=settings, workers=0)
    yield client
    client.close()
    worker.stop()
    backend.close()


def test_workers_record_nodes_runs_and_retries(observed: af.Client) -> None:
    add, flaky = flows.api_add.key, flows.api_flaky.key
    before = render(observed.stats).decode()
    for i in range(3):
        assert observed.execute(flows.api_flow, a=i).result(timeout=30) == 2 * (i + 1)
    assert observed.execute(flows.api_retry, x=5).result(timeout=30) == 5
    after = render(observed.stats).decode()
    delta = lambda name, **kw: value(after, name, **kw) - value(before, name, **kw)  # noqa: E731
    assert delta("autoflow_node_runs_total", type=add, outcome="completed") == 3
    assert delta("autoflow_node_duration_seconds_count", type=add) == 3
    assert delta("autoflow_node_runs_total", type=flaky, outcome="retrying") >= 1
    assert delta("autoflow_node_runs_total", type=flaky, outcome="completed") == 1
    assert delta("autoflow_runs_finished_total", status="completed") == 4
    assert value(after, "autoflow_queue_completed", queue="workflow") >= 4  # read from the store
    assert value(after, "autoflow_queue_waiting", queue="node") == 0


def test_process_workers_share_their_counters(redis_url: str, settings: af.Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AUTOFLOW_REDIS_URL": redis_url,
        "AUTOFLOW_NAMESPACE": settings.namespace,
        "MONITORING_ENABLED": "true",
        "MONITORING_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "prom").mkdir()
    cmd = [sys.executable, "-m", "autoflow.cli", "worker", "tests.server.flows", "--kind", "process", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = af.Client(redis_url, settings=settings)
    try:
        runs = [client.execute(flows.api_flow, a=i) for i in range(6)]
        assert [r.result(timeout=60) for r in runs] == [2 * (i + 1) for i in range(6)]
        # Two naps at once: each holds one process, so both processes count something
        # (six short runs may all be taken by one of them).
        naps = [client.execute(flows.api_slow, seconds=0.5) for _ in range(2)]
        assert [r.result(timeout=60) for r in naps] == [0.5, 0.5]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                text = ""
            done = value(text, "autoflow_node_runs_total", type=flows.api_double.key, outcome="completed")
            napped = value(text, "autoflow_node_runs_total", type=flows.api_nap.key, outcome="completed")
            if done == 6 and napped == 2:
                break
            assert time.monotonic() < deadline, f"the worker's /metrics never counted 6 (last {done}):\n{text[:2000]}"
            time.sleep(0.1)
        assert len(list((tmp_path / "prom").glob("counter_*.db"))) >= 2  # more than one process wrote
        assert value(text, "autoflow_queue_completed", queue="workflow") == 8
    finally:
        client.close()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_api_metrics(api: Api) -> None:
    run = api.http.post("/api/executions/execute", json={"workflowId": "api_flow"}, headers=api.auth()).json()
    api.wait_status(run["executionId"], api.auth(), lambda b: b["status"] == "completed")
    api.http.get("/api/executions/nope!/status", headers=api.auth())
    reply = api.http.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert value(text, "autoflow_http_requests_total", method="POST", route="/api/executions/execute", code="202") >= 1
    assert (
        value(text, "autoflow_http_requests_total", method="GET", route="/api/executions/{run_id}/status", code="422")
        >= 1
    )
    assert value(text, "autoflow_runs_started_total", trigger="api") >= 1
    assert value(text, "autoflow_queue_completed", queue="workflow") == 1
