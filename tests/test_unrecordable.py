"""Every outcome of a node is recorded at once, with its own clear error: no retry loop
until WorkerCrashed (issue 7, items 7, 8 and 10)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import autoflow as af
from autoflow.engine.planner import retry_delay
from autoflow.models import NodeStatus
from autoflow.store.base import Store


@af.node(retries=3, backoff=af.Backoff(base=0.01, max=0.05))
def exits(code: int) -> int:
    sys.exit(code)


@af.workflow(name="unrec_exit")
def exit_flow(code: int = 3):
    return exits(code)


@af.node(retries=3, backoff=af.Backoff(base=0.01, max=0.05))
def interrupts(x: int) -> int:
    raise KeyboardInterrupt


@af.workflow(name="unrec_interrupt")
def interrupt_flow(x: int = 1):
    return interrupts(x)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even printing me fails")


@af.node(retries=1, backoff=af.Backoff(base=0.01, max=0.05))
def raises_unprintable(x: int) -> int:
    raise Unprintable()


@af.workflow(name="unrec_unprintable")
def unprintable_flow(x: int = 1):
    return raises_unprintable(x)


ATTEMPTS: dict[str, int] = {}


@af.node(retries=2, backoff=af.Backoff(base=0.01, factor=1e300, max=0.05, jitter=False))
def huge_backoff(key: str, ctx: af.Context) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ctx.attempt < 3:
        raise ValueError(f"attempt {ctx.attempt} fails")
    return "third time lucky"


@af.workflow(name="unrec_backoff")
def backoff_flow(key: str):
    return huge_backoff(key)


@af.node
def logs_nan(x: float, ctx: af.Context) -> float:
    ctx.log.info("a NaN in the data", data={"value": float("nan"), "inf": float("inf"), "obj": object()})
    ctx.log.info("x" * 20_000)
    return x


@af.workflow(name="unrec_nan_log")
def nan_log_flow(x: float = 1.5):
    return logs_nan(x)


@af.node(retries=3, backoff=af.Backoff(base=0.01, max=0.05))
def big_output(size: int) -> str:
    return "x" * size


@af.workflow(name="unrec_big")
def big_flow(size: int):
    return big_output(size)


def _failed_at_once(client: af.Client, run: af.Run, node: str, error_type: str, match: str) -> None:
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    assert caught.value.error_type == error_type and caught.value.node_id == node
    assert match in caught.value.message
    info = client.status(run.id).nodes[node]
    assert info.attempt == 1 and info.stall_count == 0  # not retried, no worker lost


def test_sys_exit_fails_the_node_with_its_own_error(client: af.Client) -> None:
    run = client.execute(exit_flow, code=3)
    _failed_at_once(client, run, "exits", "SystemExit", "sys.exit(3)")
    assert client.execute(exit_flow, code=4).status().status is not None  # the worker is still there


def test_keyboard_interrupt_from_a_node_fails_it(client: af.Client) -> None:
    run = client.execute(interrupt_flow)
    _failed_at_once(client, run, "interrupts", "KeyboardInterrupt", "KeyboardInterrupt")


def test_an_exception_whose_str_raises_is_recorded(client: af.Client) -> None:
    run = client.execute(unprintable_flow)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=20)
    assert caught.value.error_type == "Unprintable" and "unprintable" in caught.value.message
    assert client.status(run.id).nodes["raises_unprintable"].attempt == 2  # retried as asked, then failed


def test_a_huge_backoff_factor_retries_at_the_cap(client: af.Client) -> None:
    started = time.monotonic()
    assert client.execute(backoff_flow, key=str(id(client))).result(timeout=20) == "third time lucky"
    assert time.monotonic() - started < 10
    options = huge_backoff.options
    assert retry_delay(options, 2) == 0.05
    default = af.NodeOptions(retries=5000)
    assert 0 < retry_delay(default, 1025) <= 60 and 0 < retry_delay(default, 4000) <= 60  # 2**1024 overflows


def test_nan_and_unserialisable_log_data_do_not_fail_the_node(client: af.Client) -> None:
    run = client.execute(nan_log_flow)
    assert run.result(timeout=20) == 1.5
    lines = [entry for entry in run.logs() if entry.node_id == "logs_nan"]
    data = next(entry.data for entry in lines if entry.message == "a NaN in the data")
    assert data is not None and "not_logged" in data  # the object() made the data unstorable: a note says why
    long = next(entry for entry in lines if entry.message.startswith("xxx"))
    assert len(long.message) < 9000 and "more characters not kept" in long.message


def test_an_output_over_the_limit_fails_quickly_naming_node_and_limit(client: af.Client, settings: af.Settings) -> None:
    limit = settings.limits.max_value_bytes
    run = client.execute(big_flow, size=limit + 10)
    _failed_at_once(client, run, "big_output", "OutputError", f"limit of {limit:,}")
    assert client.execute(big_flow, size=100).result(timeout=20) == "x" * 100


def test_an_outcome_the_store_cannot_take_is_recorded_as_a_failure(
    client: af.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Store = client.backend.store
    real = store.complete

    def refuses(run_id: str, node_id: str, token: str, output: str, logs: Any, *rest: Any) -> Any:
        if node_id == "big_output":
            raise ValueError("the store could not encode this")
        return real(run_id, node_id, token, output, logs, *rest)

    monkeypatch.setattr(store, "complete", refuses)
    run = client.execute(big_flow, size=10)
    _failed_at_once(client, run, "big_output", "OutputError", "could not be recorded: ValueError")


def test_the_observer_hears_the_outcome_that_was_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics count what the store recorded: a completion it refused is a failure."""
    seen: list[tuple[str, str]] = []

    class Recorder:
        def node_done(self, node_type: str, outcome: str, seconds: float) -> None:
            seen.append((node_type, outcome))

        def run_finished(self, status: af.RunStatus) -> None:
            pass

    client = af.Client(immediate=True, observer=Recorder())
    store: Store = client.backend.store
    real = store.complete

    def refuses(*args: Any) -> Any:
        raise ValueError("the store could not encode this")

    try:
        assert client.execute(big_flow, size=3).result(timeout=20) == "xxx"
        monkeypatch.setattr(store, "complete", refuses)
        with pytest.raises(af.RunFailed):
            client.execute(big_flow, size=3).result(timeout=20)
        assert [outcome for _type, outcome in seen] == ["completed", "failed"]
    finally:
        monkeypatch.setattr(store, "complete", real)
        client.close()


# -- 10. a concurrency slot is held until the function has really stopped --------------

RUNNING = {"now": 0, "max": 0}
LOCK = threading.Lock()


@af.node(concurrency=1, timeout=0.2, retries=0)
def slow_exclusive(seconds: float) -> float:
    with LOCK:
        RUNNING["now"] += 1
        RUNNING["max"] = max(RUNNING["max"], RUNNING["now"])
    try:
        time.sleep(seconds)  # a thread worker cannot stop this: it outlives its timeout
    finally:
        with LOCK:
            RUNNING["now"] -= 1
    return seconds


@af.workflow(name="unrec_exclusive")
def exclusive_flow(seconds: float = 0.6):
    return slow_exclusive(seconds)


def test_a_slot_is_not_reused_while_an_abandoned_function_runs(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode runs one node at a time anyway")
    RUNNING.update(now=0, max=0)
    runs = [client.execute(exclusive_flow, seconds=0.6) for _ in range(3)]
    for run in runs:
        with pytest.raises(af.RunFailed) as caught:
            run.result(timeout=30)
        assert caught.value.error_type == "NodeTimeout"
    deadline = time.monotonic() + 5
    while RUNNING["now"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RUNNING["max"] == 1  # never two bodies at once, although each "finished" at 0.2 s
    assert all(client.status(r.id).nodes["slow_exclusive"].status is NodeStatus.FAILED for r in runs)
