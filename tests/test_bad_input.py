"""Bad input gets a clear af.AutoflowError naming the field, at a bounded cost (issue 7,
items 5, 15, 16 and 17)."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from autoflow.store.redis import RedisStore
from autoflow.store.sqlite import SQLiteStore
from tests.resources.dags import add, double

# -- 5. node names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c,d", "a[1]", "x|y", "{n}", "k:v", "with space", "", "1st", "é" * 200])
def test_invalid_node_names_are_refused_where_they_are_given(name: str) -> None:
    with pytest.raises(af.WorkflowError, match="not a valid node name"):

        @af.node(name=name)
        def f(x: int) -> int:
            return x

    with pytest.raises(af.WorkflowError, match="not a valid node name"):
        double.with_options(name=name)


def test_names_the_json_format_accepts_run_on_every_backend(client: af.Client) -> None:
    dotted = double.with_options(name="step.one-2")

    @af.workflow(name="names_dotted")
    def dotted_flow(x: int = 2):
        return add(dotted(x), dotted(x))

    assert client.execute(dotted_flow, x=3).result(timeout=20) == 12


# -- 15. bounded cost --------------------------------------------------------------------


def _definition(**edge: Any) -> dict[str, Any]:
    return {
        "name": "bounded",
        "nodes": [
            {"id": "a", "type": double.key, "config": {"x": 1}},
            {"id": "b", "type": "tests.resources.dags:total", "config": {}},
        ],
        "edges": [{"source": "a", "target": "b", "input": "parts", **edge}],
        "output": "b",
    }


def test_a_huge_edge_index_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(af.WorkflowError, match="index"):
        af.Workflow.from_dict(_definition(index=10**9))
    assert time.monotonic() - started < 1.0


def test_a_definition_over_the_node_limit_is_refused() -> None:
    data = _definition()
    data["nodes"] = [{"id": f"n{i}", "type": double.key, "config": {"x": 1}} for i in range(50)]
    data["edges"], data["output"] = [], "n0"
    with pytest.raises(af.WorkflowError, match="limit of 10"):
        af.Workflow.from_dict(data, limits=af.Settings(max_nodes=10).limits)


@af.node
def many(n: int) -> list[int]:
    return list(range(n))


@af.workflow(name="bad_big_map")
def big_map(n: int):
    return double.map(many(n))


def test_a_map_over_the_item_limit_fails_with_a_clear_error(client: af.Client) -> None:
    limit = client.settings.limits.max_map_items
    with pytest.raises(af.RunFailed, match="AUTOFLOW_MAX_MAP_ITEMS") as caught:
        client.execute(big_map, n=limit + 1).result(timeout=30)
    assert caught.value.node_id == "double"


def test_a_big_map_never_holds_redis_for_long(redis_url: str, settings: af.Settings) -> None:
    """100,000 items are uploaded in short chunks and queued a window at a time: no single
    command holds Redis for long (one script for all of them used to block it for seconds)."""
    from autoflow.store.base import NewRun, NodeSeed

    store = RedisStore.from_url(redis_url, namespace=settings.namespace)
    store.r.config_set("slowlog-log-slower-than", 50_000)  # microseconds
    store.r.slowlog_reset()
    try:
        run = NewRun(
            id="bigmap" + settings.namespace,
            workflow="w",
            digest="d" * 32,
            inputs={},
            output=None,
            created_at=time.time(),
        )
        store.create_run(run, [NodeSeed("m", "t", (), ())])
        store.admit(10)
        store.claim(run.id, "m", 1, "tok", 60)
        started = time.monotonic()
        progress = store.expand(run.id, "m", "tok", [str(i) for i in range(100_000)], None, [])
        assert progress.accepted and len(progress.ready) == 1000  # one window queued, the rest follow
        assert time.monotonic() - started < 10
        slow = store.r.slowlog_get(128)  # every command over 50 ms (this server is ours)
        assert not slow, [(e["duration"], e["command"][:40]) for e in slow]
        assert store.map_results(run.id, "m", 99_998, 2) == ["null", "null"]  # not run yet
    finally:
        store.r.config_set("slowlog-log-slower-than", 10_000)
        store.close()


# -- 16. every refusal is an AutoflowError naming the field ----------------------------


@af.workflow(name="bad_typed")
def typed(x: float, tags: dict[str, Any] | None = None):
    return double(1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"x": math.nan}, "inputs"),
        ({"x": math.inf}, "inputs"),
        ({"x": 1.0, "tags": {"t": "\ud800"}}, "Unicode"),
        ({"x": 1.0, "priority": 2**63}, "priority"),
        ({"x": 1.0, "priority": True}, "priority"),
        ({"x": 1.0, "idempotency_key": {"a": 1}}, "idempotency_key"),
        ({"x": 1.0, "idempotency_key": ""}, "idempotency_key"),
        ({"x": 1.0, "user_id": 5}, "user_id"),
        ({"x": 1.0, "organization_id": ["o"]}, "organization_id"),
        ({"x": 1.0, "trigger_data": {"n": math.nan}}, "trigger_data"),
        ({"x": 1.0, "trigger": "not a word"}, "trigger"),
        ({"x": 1.0, "tags": {"deep": "x"}, "trigger_data": "nest"}, "trigger_data"),
    ],
)
def test_bad_execute_arguments_are_input_errors(client: af.Client, kwargs: dict[str, Any], field: str) -> None:
    if kwargs.get("trigger_data") == "nest":
        nested: Any = "leaf"
        for _ in range(5000):
            nested = [nested]
        kwargs["trigger_data"] = nested
    before = len(client.runs())
    with pytest.raises(af.InputError, match=field):
        client.execute(typed, **kwargs)
    assert len(client.runs()) == before  # nothing stored


def test_deeply_nested_inputs_are_refused(client: af.Client) -> None:
    nested: Any = 1
    for _ in range(3000):
        nested = {"n": nested}
    with pytest.raises(af.InputError, match="tags"):
        client.execute(typed, x=1.0, tags=nested)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schedule": "every tuesday-ish"}, "cron"),
        ({"nodes": [{"id": "a", "type": double.key, "options": {"timeout": True}}]}, "timeout"),
        ({"nodes": [{"id": "a", "type": double.key, "options": {"priority": 2**63}}]}, "priority"),
        ({"nodes": [{"id": "a", "type": double.key, "map": {"over": "x", "max_parallel": True}}]}, "map"),
        ({"nodes": [{"id": "a", "type": double.key, "options": "fast"}]}, "options"),
        ({"nodes": [{"id": "a", "type": double.key, "options": {"backoff": {"base": "x"}}}]}, "backoff"),
        ({"edges": {"a": "b"}}, "edges"),
        ({"edges": [{"source": ["a"], "target": "a", "input": "x"}]}, "source"),
        ({"edges": [{"source": "a", "target": "a", "input": "x", "index": True}]}, "index"),
        ({"nodes": [{"id": "a", "type": double.key, "config": {"x": math.nan}}]}, "valid JSON|NaN|config"),
        ({"workflows": ["x"]}, "workflows"),
        ({"inputs": {"x": "int"}}, "inputs"),
        ({"nodes": "a"}, "nodes"),
        ({"name": 7}, "name"),
    ],
)
def test_malformed_definitions_are_workflow_errors(change: dict[str, Any], match: str) -> None:
    data: dict[str, Any] = {
        "name": "malformed",
        "nodes": [{"id": "a", "type": double.key, "config": {"x": 1}}],
        "edges": [],
        "output": "a",
        **change,
    }
    with pytest.raises(af.WorkflowError, match=match):
        wf = af.Workflow.from_dict(data)
        af.Client(immediate=True).execute(wf)  # a NaN constant is refused at the latest here


def test_logs_of_an_unknown_run_is_not_found(client: af.Client) -> None:
    with pytest.raises(af.NotFoundError):
        client.logs("no-such-run")


def test_a_full_sqlite_disk_is_a_backend_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "full.db")
    with sqlite3.connect(tmp_path / "full.db") as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is now "full"
    with pytest.raises(af.BackendError, match="full"):
        store.put_definition("d" * 32, "x" * 1_000_000)
    store.close()


def test_an_evicting_redis_is_refused_at_connect(tmp_path: Path) -> None:
    from tests.conftest import start_redis

    url, stop = start_redis(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(af.BackendError, match="noeviction"):
            af.Client(url, settings=af.Settings(home=tmp_path))
    finally:
        stop()


def test_waiting_needs_no_write_command(redis_url: str, settings: af.Settings) -> None:
    """A client whose Redis user may only read can still wait for runs."""
    with af.Client(redis_url, settings=settings, workers=2) as client:
        run = client.execute(typed, x=1.0)
        admin = RedisStore.from_url(redis_url, namespace=settings.namespace)
        admin.r.execute_command(
            "ACL", "SETUSER", "reader", "on", ">readpw", "~*", "+@read", "+ping", "+info", "+config|get"
        )
        reader = RedisStore.from_url(
            redis_url.replace("redis://", "redis://reader:readpw@"), namespace=settings.namespace
        )
        try:
            deadline = time.monotonic() + 20
            while reader.run_status(run.id) is not af.RunStatus.COMPLETED:
                reader.wait_finished(run.id, 0.5)
                assert time.monotonic() < deadline
        finally:
            reader.close()
            admin.r.execute_command("ACL", "DELUSER", "reader")
            admin.close()


# -- 17. references in workflow bodies; a worker whose Redis is down --------------------


@pytest.mark.parametrize(
    "body",
    ['f"day-{n}"', "n + 1", "1 + n", "range(n)", "n * 2", "str(n)", "'%s' % n", "n < 3", "-n", "[0, 1][n]"],
)
def test_python_on_references_is_a_workflow_error_saying_what_to_do(body: str) -> None:
    source = f"""
@af.workflow(name="refs_misuse")
def misuse(n: int):
    return double({body})
"""
    with pytest.raises(af.WorkflowError, match="inside a node"):
        exec(source, {"af": af, "double": double})


def test_a_worker_whose_redis_is_down_logs_one_line_per_backoff_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import start_redis

    url, stop = start_redis(tmp_path)
    settings = af.Settings(home=tmp_path, namespace="down", lease_seconds=1.0, requeue_seconds=1.0)
    client = af.Client(url, settings=settings, workers=2)
    client.start()
    stop()  # Redis goes away under a running worker
    caplog.set_level(logging.DEBUG, logger="autoflow")
    caplog.set_level(logging.DEBUG, logger="huey")
    time.sleep(3.0)  # let it fail for a while: the point is how much it says meanwhile
    client.close()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    tracebacks = [r for r in lines if r.exc_info]
    assert len(lines) <= 20, [r.getMessage() for r in lines]
    assert len(tracebacks) <= 3
