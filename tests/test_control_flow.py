"""Control flow as graph elements, on every backend: branches, trigger rules and error
handlers, dynamic fan-out (.map), sub-workflows, durable delays, rate and concurrency
limits."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import autoflow as af
from autoflow.models import NodeStatus, RunStatus

_live = {"now": 0, "peak": 0}
_live_lock = threading.Lock()


def _enter() -> None:
    with _live_lock:
        _live["now"] += 1
        _live["peak"] = max(_live["peak"], _live["now"])


def _leave() -> None:
    with _live_lock:
        _live["now"] -= 1


@af.node
def is_big(x: int) -> bool:
    return x > 10


@af.node
def big(x: int) -> str:
    return f"big {x}"


@af.node
def small(x: int) -> str:
    return f"small {x}"


@af.node
def shout(text: str) -> str:
    return text.upper()


@af.node
def join(a: str | None, b: str | None) -> str:
    return a or b or "nothing"


@af.workflow
def branchy(x: int):
    cond = is_big(x)
    yes = shout(big(x, when=cond))  # shout depends only on big: skipped with it
    no = small(x, when=~cond)
    return join(yes, no)


@af.node(retries=0)
def risky(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


@af.node(trigger="one_failed")
def on_error(failed: af.ErrorInfo) -> str:
    return f"handled {failed.type}: {failed.message}"


@af.node
def after_risky(x: int) -> int:
    return x + 1


@af.node(trigger="all_done")
def summary(a: int | None, b: str | None) -> dict[str, object]:
    return {"a": a, "b": b}


@af.workflow
def guarded(x: int):
    value = risky(x)
    handled = on_error(value)
    return summary(after_risky(value), handled)


@af.workflow
def unguarded(x: int):
    return after_risky(risky(x))


@af.node
def numbers(n: int) -> list[int]:
    return list(range(n))


@af.node
def square(x: int, offset: int = 0) -> int:
    _enter()
    time.sleep(0.01)
    _leave()
    return x * x + offset


@af.node
def total(values: list[int]) -> int:
    return sum(values)


@af.workflow
def mapped(n: int):
    squares = square.map(numbers(n), offset=1, max_parallel=3)
    return {"squares": squares, "total": total(squares)}


@af.node(retries=0)
def picky(x: int) -> int:
    if x == 2:
        raise KeyError("two")
    return x


@af.workflow
def mapped_failing(n: int = 4):
    return picky.map(numbers(n))


@af.workflow
def mapped_tolerant(n: int = 4):
    return picky.with_options(trigger="all_done").map(numbers(n))


@af.node
def not_a_list(n: int) -> Any:  # only known at run time
    return {"n": n}


@af.workflow
def mapped_wrong(n: int = 1):
    return square.map(not_a_list(n))


@af.workflow
def child(x: int):
    return join(shout(big(x)), small(x))


@af.node
def wrap(text: str) -> str:
    return f"[{text}]"


@af.workflow
def parent(x: int):
    return wrap(child(x))


@af.workflow
def failing_child(x: int = -1):
    return after_risky(risky(x))


@af.workflow
def parent_of_failing(x: int = -1):
    return wrap(failing_child(x))


@af.node
def anything(value: Any) -> Any:
    return value


@af.workflow
def parent_of_mistyped(value: str = "twelve"):
    return wrap(child(anything(value)))  # child wants an int: known only when it runs


@af.node
def slow_step(seconds: float, ctx: af.Context) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.01)
    return seconds


@af.workflow
def slow_child(seconds: float = 30.0):
    return slow_step(seconds)


@af.workflow
def parent_of_slow(seconds: float = 30.0):
    return wrap(slow_child(seconds))


@af.node
def stamp(label: str) -> float:
    return time.time()


@af.workflow
def delayed(seconds: float = 0.6):
    first = stamp("first")
    return {"before": first, "after": stamp(af.delay("second", seconds=seconds))}


@af.workflow
def delayed_until(at: datetime):
    return stamp(af.delay("x", until=at))


@af.node(rate_limit="5/s")
def limited(x: int) -> float:
    return time.time()


@af.workflow
def rate_limited(n: int = 8):
    return limited.map(numbers(n))


@af.node(concurrency=1)
def exclusive(x: int) -> int:
    _enter()
    time.sleep(0.03)
    _leave()
    return x


@af.workflow
def one_at_a_time(n: int = 6):
    return exclusive.map(numbers(n))


def test_branches_run_one_side_and_the_join_runs_with_it(client: af.Client) -> None:
    run = client.execute(branchy, x=42)
    assert run.result(timeout=30) == "BIG 42"
    states = {k: n.status for k, n in run.status().nodes.items()}
    assert states["small"] is NodeStatus.SKIPPED and states["join"] is NodeStatus.COMPLETED
    run = client.execute(branchy, x=1)
    assert run.result(timeout=30) == "small 1"
    states = {k: n.status for k, n in run.status().nodes.items()}
    assert states["big"] is NodeStatus.SKIPPED and states["shout"] is NodeStatus.SKIPPED  # skip propagates


def test_branches_are_graph_elements() -> None:
    edge = branchy.graph.edges["is_big", "small"]
    assert edge["kind"] == "branch"
    assert branchy.graph.nodes["small"]["when"] == {"node": "is_big", "value": False}
    d = branchy.to_dict()
    assert {"source": "is_big", "target": "big", "input": "$when", "kind": "branch"} in d["edges"]
    assert af.Workflow.from_dict(d).digest == branchy.digest
    assert guarded.graph.edges["risky", "on_error"]["kind"] == "error"


def test_an_error_handler_receives_the_error_and_the_run_completes(client: af.Client) -> None:
    run = client.execute(guarded, x=-5)
    out = run.result(timeout=30)
    assert out == {"a": None, "b": "handled ValueError: negative input -5"}
    info = run.status()
    assert info.status is RunStatus.COMPLETED and info.error is None
    assert info.nodes["risky"].status is NodeStatus.FAILED
    assert info.nodes["after_risky"].status is NodeStatus.SKIPPED
    ok = client.execute(guarded, x=3)
    assert ok.result(timeout=30) == {"a": 4, "b": None}
    assert ok.status().nodes["on_error"].status is NodeStatus.SKIPPED


def test_an_unhandled_failure_fails_the_run(client: af.Client) -> None:
    with pytest.raises(af.RunFailed, match="negative input"):
        client.execute(unguarded, x=-1).result(timeout=30)


def test_map_runs_each_item_bounded_and_in_order(client: af.Client) -> None:
    _live["peak"] = 0
    run = client.execute(mapped, n=12)
    out = run.result(timeout=30)
    assert out["squares"] == [i * i + 1 for i in range(12)] and out["total"] == sum(i * i + 1 for i in range(12))
    assert _live["peak"] <= 3
    node = run.status().nodes["square"]
    assert (node.items_total, node.items_done, node.status) == (12, 12, NodeStatus.COMPLETED)
    assert "square[0]" not in run.status().nodes  # items are not listed as nodes
    assert client.execute(mapped, n=0).result(timeout=30) == {"squares": [], "total": 0}


def test_a_failed_item_fails_the_map_unless_its_rule_tolerates_it(client: af.Client) -> None:
    with pytest.raises(af.RunFailed) as caught:
        client.execute(mapped_failing, n=4).result(timeout=30)
    assert caught.value.error_type == "KeyError"
    out = client.execute(mapped_tolerant, n=4).result(timeout=30)
    assert out[:2] == [0, 1] and out[3] == 3 and out[2]["type"] == "KeyError"


def test_map_over_a_non_list_is_a_clear_error(client: af.Client) -> None:
    with pytest.raises(af.RunFailed, match=r"\.map needs a list for parameter 'x', got dict") as caught:
        client.execute(mapped_wrong).result(timeout=30)
    assert caught.value.node_id == "square"


def test_sub_workflows_run_as_linked_child_runs(client: af.Client) -> None:
    run = client.execute(parent, x=20)
    assert run.result(timeout=30) == "[BIG 20]"
    node = run.status().nodes["child"]
    assert node.type == "autoflow.workflow" and node.child_run_id
    sub = client.status(node.child_run_id)
    assert sub.workflow == "child" and sub.parent_run_id == run.id and sub.parent_node_id == "child"
    assert sub.status is RunStatus.COMPLETED and any("completed in" in e.message for e in client.logs(sub.id))
    assert parent.to_dict()["workflows"]["child"]["name"] == "child"
    assert af.Workflow.from_dict(parent.to_dict()).digest == parent.digest


def test_a_failing_sub_workflow_fails_its_parent_node(client: af.Client) -> None:
    with pytest.raises(af.RunFailed, match=r"sub-workflow run .* failed: negative input") as caught:
        client.execute(parent_of_failing).result(timeout=30)
    assert caught.value.node_id == "failing_child"


def test_a_sub_workflow_given_bad_inputs_fails_its_parent_node(client: af.Client) -> None:
    run = client.execute(parent_of_mistyped)
    with pytest.raises(af.RunFailed, match=r"sub-workflow 'child', input 'x'") as caught:
        run.result(timeout=30)  # at once: not after a lease expired and the reaper came
    assert caught.value.node_id == "child"
    node = run.status().nodes["child"]
    assert node.status is NodeStatus.FAILED and node.attempt == 1 and node.child_run_id is None


def test_cancelling_the_parent_cancels_the_child(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(parent_of_slow, seconds=30)
    deadline = time.monotonic() + 15
    while not run.status().nodes["slow_child"].child_run_id:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child_id = run.status().nodes["slow_child"].child_run_id
    assert child_id is not None
    while client.status(child_id).nodes["slow_step"].status is not NodeStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=5).status is RunStatus.CANCELLED
    assert client.wait(child_id, timeout=5).status is RunStatus.CANCELLED
    assert time.monotonic() - started < 2.0


def test_a_durable_delay_waits_without_holding_a_worker(client: af.Client) -> None:
    run = client.execute(delayed, seconds=0.6)
    if client.backend.kind != "memory":
        deadline = time.monotonic() + 10
        while run.status().nodes["delay"].status is not NodeStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Waiting holds no worker: another run gets through meanwhile.
        assert client.execute(branchy, x=1).result(timeout=5) == "small 1"
    out = run.result(timeout=30)
    assert out["after"] - out["before"] >= 0.55


def test_a_delay_until_a_datetime(client: af.Client) -> None:
    at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    assert client.execute(delayed_until, at=at).result(timeout=30) >= at.timestamp() - 0.01


def test_cancelling_during_a_delay_ends_the_run_at_once(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode returns only when the run is over")
    run = client.execute(delayed, seconds=60)
    deadline = time.monotonic() + 10
    while run.status().nodes["delay"].status is not NodeStatus.WAITING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=5).status is RunStatus.CANCELLED
    assert time.monotonic() - started < 1.0


def test_rate_limits_spread_calls_out(client: af.Client) -> None:
    times = sorted(client.execute(rate_limited, n=8).result(timeout=30))
    # A bucket of 5 per second: the first 5 go at once, the other 3 need ~0.6 s more.
    assert times[-1] - times[0] >= 0.45


def test_concurrency_limit_caps_running_instances(client: af.Client) -> None:
    _live["peak"] = 0
    assert client.execute(one_at_a_time, n=6).result(timeout=30) == list(range(6))
    assert _live["peak"] == 1


def test_control_flow_input_errors_name_the_node() -> None:
    @af.node
    def unannotated(x: int):  # type: ignore[no-untyped-def]
        return x > 1

    with pytest.raises(af.WorkflowError, match=r"node 'big'.*when= needs a node that returns bool.*'unannotated'"):

        @af.workflow
        def bad_when(x: int):
            return big(x, when=unannotated(x))

    with pytest.raises(af.WorkflowError, match="when= takes the output of a node"):

        @af.workflow
        def bad_when_value(x: int):
            return big(x, when=True)

    with pytest.raises(af.WorkflowError, match="node 'f': unknown trigger rule 'sometimes'"):

        @af.node(trigger="sometimes")
        def f() -> None: ...

    with pytest.raises(af.WorkflowError, match="node 'g': rate_limit '10 per second' does not parse"):

        @af.node(rate_limit="10 per second")
        def g() -> None: ...

    with pytest.raises(af.WorkflowError, match=r"\.map needs a list, but its items are str"):

        @af.workflow
        def bad_map(text: str):
            return square.map(text)

    with pytest.raises(af.WorkflowError, match="exactly one of seconds= or until="):

        @af.workflow
        def bad_delay(x: int):
            return big(af.delay(x))
