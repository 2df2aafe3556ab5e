"""End to end through the client, on every backend: immediate (in memory), embedded SQLite
with worker threads, and Redis with in-process workers."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import pytest
from pydantic import BaseModel

import autoflow as af
from autoflow.models import NodeStatus, RunStatus

FAST = af.Backoff(base=0.05, factor=2.0, max=1.0, jitter=False)
_attempts: dict[str, int] = {}
_lock = threading.Lock()


class Point(BaseModel):
    x: int
    y: int
    at: datetime


@af.node
def double(x: int) -> int:
    return 2 * x


@af.node
def total(*parts: float) -> float:
    return sum(parts)


@af.node
def collect(items: list[int], meta: dict[str, int]) -> dict[str, int]:
    return {"sum": sum(items), **meta}


@af.node(retries=3, backoff=FAST)
def flaky(key: str, fail_times: int, ctx: af.Context) -> int:
    with _lock:
        _attempts[key] = _attempts.get(key, 0) + 1
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"attempt {ctx.attempt} of {key} failed")
    return ctx.attempt


@af.node(retries=0)
def explode(x: int) -> int:
    raise ValueError(f"bad value {x}; password=hunter2")


@af.node(retries=0)
def after(x: float) -> float:
    return x


@af.node(retries=0, timeout=0.3)
def too_slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@af.node(retries=0)
def careful(seconds: float, ctx: af.Context) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.01)
    return seconds


@af.node(retries=0)
def stubborn(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@af.node
def gives_up() -> int:
    raise af.NodeCancelled("nobody cancelled me")


@af.workflow
def self_cancelling(x: int = 1):
    return double(gives_up())


@af.node
def describe(ctx: af.Context, tag: str) -> dict[str, object]:
    ctx.log.info("describing", data={"tag": tag, "api_key": "sk_live_abcdefgh12345678"})
    return {"run": ctx.run_id, "node": ctx.node_id, "attempt": ctx.attempt, "workflow": ctx.workflow}


@af.node
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@af.node
def make_point(x: int) -> Point:
    return Point(x=x, y=-x, at=datetime(2026, 1, 2, tzinfo=timezone.utc))


@af.node
def shift(p: Point) -> Point:
    assert isinstance(p, Point)  # the JSON output came back as the annotated model
    return Point(x=p.x + 1, y=p.y, at=p.at)


@af.node(retries=0)
def not_json(x: int) -> object:
    return object()


@af.workflow
def diamond(x: int):
    return total(double(x), double(x))


@af.workflow
def fan(n: int = 3):
    parts = [double(n) for _ in range(4)]
    return collect(parts, {"first": parts[0]})


@af.workflow
def retrying(key: str, fail_times: int = 2):
    return flaky(key, fail_times)


@af.workflow
def failing(x: int = 1):
    bad = explode(x)
    return total(after(bad), double(x))


@af.workflow
def timing_out(seconds: float = 2.0):
    return too_slow(seconds)


@af.workflow
def slow_pair(seconds: float = 5.0):
    first = careful(seconds)
    return after(first)


@af.workflow
def stubborn_flow(seconds: float = 3.0):
    return stubborn(seconds)


@af.workflow
def parallel(seconds: float = 0.4):
    return total(careful(seconds), careful(seconds))


@af.workflow
def described(tag: str = "t"):
    return describe(tag=tag)


@af.workflow
def asynchronous(a: int, b: int):
    return async_add(a, b)


@af.workflow
def points(x: int):
    return shift(make_point(x))


@af.workflow
def bad_output(x: int = 1):
    return not_json(x)


def test_diamond_result_statuses_and_logs(client: af.Client) -> None:
    run = client.execute(diamond, x=5)
    assert run.result(timeout=20) == 20
    info = run.status()
    assert info.status is RunStatus.COMPLETED and info.progress == (3, 3)
    assert all(n.status is NodeStatus.COMPLETED and n.attempt == 1 for n in info.nodes.values())
    assert info.nodes["total"].output == 20
    messages = [e.message for e in run.logs()]
    assert messages[0] == "run started" and messages[-1] == "run completed"
    assert sum("completed in" in m for m in messages) == 3
    assert str(run).startswith(f"<Run {run.id} diamond completed 3/3")


def test_fan_out_fan_in_with_lists_and_dicts(client: af.Client) -> None:
    assert client.execute(fan, n=3).result(timeout=20) == {"sum": 24, "first": 6}
    assert fan.graph.in_degree("collect") == 4


def test_independent_nodes_run_in_parallel(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode runs nodes one after another by design")
    run = client.execute(parallel, seconds=0.5)
    assert run.result(timeout=20) == 1.0
    nodes = run.status().nodes
    a, b = nodes["careful"], nodes["careful_2"]
    assert a.started_at and b.started_at and a.finished_at and b.finished_at
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # they overlapped


def test_retries_with_backoff_then_success(client: af.Client) -> None:
    key = f"retry-{client.backend.kind}"
    run = client.execute(retrying, key=key, fail_times=2)
    assert run.result(timeout=20) == 3
    assert _attempts[key] == 3
    node = run.status().nodes["flaky"]
    assert node.attempt == 3 and node.error is None
    warns = [e for e in run.logs() if e.level is af.LogLevel.WARN]
    assert len(warns) == 2 and "retrying in" in warns[0].message


def test_exhausted_retries_fail_the_run(client: af.Client) -> None:
    key = f"exhaust-{client.backend.kind}"
    run = client.execute(retrying, key=key, fail_times=9)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    assert caught.value.node_id == "flaky" and caught.value.error_type == "ConnectionError"
    assert _attempts[key] == 4  # 1 + 3 retries


def test_failure_skips_dependants_and_keeps_the_traceback(client: af.Client) -> None:
    run = client.execute(failing, x=1)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    exc = caught.value
    assert exc.node_id == "explode" and exc.error_type == "ValueError"
    assert "Traceback" in exc.traceback and "explode" in exc.traceback
    assert "hunter2" not in exc.message and "hunter2" not in exc.traceback  # secrets redacted
    info = run.status()
    assert {k: n.status.value for k, n in info.nodes.items()} == {
        "explode": "failed",
        "after": "skipped",
        "double": "completed",
        "total": "skipped",
    }
    assert info.nodes["explode"].attempt == 1  # retries=0


def test_a_node_raising_nodecancelled_on_its_own_fails_instead_of_hanging(client: af.Client) -> None:
    with pytest.raises(af.RunFailed) as caught:
        client.execute(self_cancelling).result(timeout=20)
    assert caught.value.error_type == "NodeCancelled" and caught.value.node_id == "gives_up"


def test_timeout_fails_the_node(client: af.Client) -> None:
    started = time.monotonic()
    run = client.execute(timing_out, seconds=1.5)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    assert caught.value.error_type == "NodeTimeout" and "0.3" in caught.value.message
    assert time.monotonic() - started < 1.4


def test_cancel_stops_a_cooperative_run_within_a_second(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(slow_pair, seconds=30)
    _wait_for(lambda: run.status().nodes["careful"].status is NodeStatus.RUNNING)
    started = time.monotonic()
    run.cancel()
    info = run.wait(timeout=5)
    assert time.monotonic() - started < 1.5
    assert info.status is RunStatus.CANCELLED
    assert info.nodes["careful"].status is NodeStatus.CANCELLED
    assert info.nodes["after"].status is NodeStatus.CANCELLED and info.nodes["after"].started_at is None
    with pytest.raises(af.RunCancelled):
        run.result(timeout=1)


def test_cancel_abandons_a_node_that_ignores_it(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(stubborn_flow, seconds=3)
    _wait_for(lambda: run.status().nodes["stubborn"].status is NodeStatus.RUNNING)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=5).status is RunStatus.CANCELLED
    assert time.monotonic() - started < 1.5


def test_pause_and_resume(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(slow_pair, seconds=0.5)
    _wait_for(lambda: run.status().nodes["careful"].status is NodeStatus.RUNNING)
    assert run.pause() is RunStatus.PAUSED
    time.sleep(0.9)  # careful finishes meanwhile; after must not start
    info = run.status()
    assert info.status is RunStatus.PAUSED
    assert info.nodes["careful"].status is NodeStatus.COMPLETED
    assert info.nodes["after"].status is NodeStatus.QUEUED
    run.resume()
    assert run.result(timeout=10) == 0.5


def test_context_and_structured_logs(client: af.Client) -> None:
    run = client.execute(described, tag="hello")
    out = run.result(timeout=20)
    assert out == {"run": run.id, "node": "describe", "attempt": 1, "workflow": "described"}
    (line,) = [e for e in run.logs(node="describe") if e.message == "describing"]
    assert line.data == {"tag": "hello", "api_key": "***"}


def test_async_nodes(client: af.Client) -> None:
    assert client.execute(asynchronous, a=2, b=3).result(timeout=20) == 5


def test_pydantic_models_travel_as_json(client: af.Client) -> None:
    out = client.execute(points, x=1).result(timeout=20)
    assert out == {"x": 2, "y": -1, "at": "2026-01-02T00:00:00Z"}


def test_non_json_output_fails_without_retry(client: af.Client) -> None:
    run = client.execute(bad_output)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    assert caught.value.error_type == "OutputError" and "not_json" in caught.value.message
    assert run.status().nodes["not_json"].attempt == 1


def test_bad_inputs_are_refused_before_anything_is_stored(client: af.Client) -> None:
    before = client.stats()
    with pytest.raises(af.InputError, match="'x'"):
        client.execute(diamond, x="not a number")
    with pytest.raises(af.InputError, match="missing required input 'x'"):
        client.execute(diamond)
    with pytest.raises(af.InputError, match="no input"):
        client.execute(diamond, x=1, y=2)
    with pytest.raises(af.InputError, match="both"):
        client.execute(diamond, {"x": 1}, x=2)
    with pytest.raises(af.NotFoundError, match="no workflow named 'nope'"):
        client.execute("nope")
    assert client.stats() == before
    assert client.runs(workflow="diamond") == []


def test_execute_by_name_and_history(client: af.Client) -> None:
    run = client.execute("diamond", inputs={"x": 2}, user_id="u1", organization_id="o1")
    assert run.result(timeout=20) == 8
    info = run.status()
    assert (info.user_id, info.organization_id, info.trigger) == ("u1", "o1", "manual")
    assert [r.id for r in client.runs(workflow="diamond")] == [run.id]
    assert client.runs(status="completed", workflow="diamond")[0].id == run.id
    stats = client.stats()
    assert stats.workflow.completed >= 1 and stats.node.completed >= 3


def test_idempotency_key_returns_the_same_run(client: af.Client) -> None:
    first = client.execute(diamond, x=1, idempotency_key="order-42")
    second = client.execute(diamond, x=1, idempotency_key="order-42")
    assert first == second
    assert first.result(timeout=20) == 4


def test_unknown_run_is_a_clear_error(client: af.Client) -> None:
    with pytest.raises(af.NotFoundError, match="no run 'nope'"):
        client.status("nope")
    with pytest.raises(af.NotFoundError):
        client.cancel("nope")


def test_wait_times_out_without_hanging(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(slow_pair, seconds=5)
    started = time.monotonic()
    with pytest.raises(af.RunTimeout):
        run.wait(timeout=0.3)
    assert time.monotonic() - started < 1.5
    run.cancel()
    run.wait(timeout=5)


def test_a_waiter_on_redis_blocks_until_the_end_instead_of_polling(
    client: af.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    if client.backend.kind != "redis":
        pytest.skip("Redis wakes waiters when a run ends (XREAD); SQLite waiters poll")
    store = client.backend.store
    waits: list[float] = []
    wait_finished = store.wait_finished

    def counted(run_id: str, timeout: float) -> bool:
        waits.append(timeout)
        return wait_finished(run_id, timeout)

    monkeypatch.setattr(store, "wait_finished", counted)
    run = client.execute(slow_pair, seconds=0.4)
    started = time.monotonic()
    assert run.result(timeout=10) is not None
    assert time.monotonic() - started < 2.0
    # One blocking read (two if the end came between the first check and the read), not
    # the 2 ms, 3 ms, 4.5 ms ... of a polling waiter (about 10 in 0.4 s).
    assert 1 <= len(waits) <= 2, waits


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_run_methods_take_the_run_handle_as_well_as_its_id(client: af.Client) -> None:
    run = client.execute(diamond, x=2)
    assert client.wait(run, timeout=20).status is RunStatus.COMPLETED
    assert client.result(run) == client.result(run.id)
    assert client.status(run).id == run.id and client.run_status(run) is RunStatus.COMPLETED
    assert client.logs(run) == client.logs(run.id)
    with pytest.raises(TypeError, match=r"a run id \(str\) or a Run, got int"):
        client.status(42)  # type: ignore[arg-type]
