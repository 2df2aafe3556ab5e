"""Admission (WORKFLOW_CONCURRENCY), priorities on both queues, and where nodes may run."""

from __future__ import annotations

import itertools
import threading
import time
import types

import pytest

import autoflow as af
from autoflow.models import RunStatus
from autoflow.store.base import Ready
from autoflow.store.redis import RedisStore

_order: list[str] = []
_order_lock = threading.Lock()


@af.node(retries=0)
def mark(tag: str, seconds: float = 0.0) -> str:
    time.sleep(seconds)
    with _order_lock:
        _order.append(tag)
    return tag


@af.workflow
def marked(tag: str, seconds: float = 0.0):
    return mark(tag, seconds)


def _client(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings, workers: int | None = None, **over: int
) -> af.Client:
    tuned = settings.model_copy(update=over)
    url = None if kind == "sqlite" else request.getfixturevalue("redis_url")
    return af.Client(url, settings=tuned, workers=tuned.node_concurrency if workers is None else workers)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_workflow_concurrency_admits_runs_by_priority(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings
) -> None:
    _order.clear()
    client = _client(kind, request, settings, workflow_concurrency=1, node_concurrency=2)
    try:
        first = client.execute(marked, tag="first", seconds=0.5)
        time.sleep(0.2)
        low = client.execute(marked, tag="low", priority=0)
        high = client.execute(marked, tag="high", priority=9)
        time.sleep(0.1)
        assert low.status().status is RunStatus.PENDING and high.status().status is RunStatus.PENDING
        assert client.stats().workflow.waiting == 2
        for run in (first, low, high):
            run.wait(timeout=20)
        assert _order == ["first", "high", "low"]
        assert first.status().finished_at <= high.status().started_at  # type: ignore[operator]
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_node_queue_serves_higher_priority_first(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings
) -> None:
    """Queue nodes of three runs while no worker runs (the submitter admits them: slots are
    free); one worker then takes them by priority."""
    _order.clear()
    submitter = _client(kind, request, settings, workers=0, workflow_concurrency=10)
    runs = {tag: submitter.execute(marked, tag=tag, priority=p) for tag, p in (("b", 1), ("c", 0), ("a", 7))}
    assert {run.status().status for run in runs.values()} == {af.RunStatus.RUNNING}
    assert submitter.backend.dispatcher.backlog() == 3 and _order == []
    worker = _client(kind, request, settings, workers=1, workflow_concurrency=10)
    worker.start()
    try:
        for run in runs.values():
            run.wait(timeout=20)
        assert _order == ["a", "b", "c"]
    finally:
        worker.close()
        submitter.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_submitter_admits_only_into_free_slots(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings
) -> None:
    """execute() admits the new run itself when a slot is free (no hop through the
    workflow queue), never beyond WORKFLOW_CONCURRENCY: the second run waits."""
    submitter = _client(kind, request, settings, workers=0, workflow_concurrency=1)
    first = submitter.execute(marked, tag="first")
    second = submitter.execute(marked, tag="second", priority=9)
    try:
        assert first.status().status is af.RunStatus.RUNNING
        assert second.status().status is af.RunStatus.PENDING
        assert submitter.backend.dispatcher.backlog() == 1
    finally:
        submitter.close()


def test_main_module_nodes_cannot_go_to_remote_workers(redis_url: str, settings: af.Settings) -> None:
    def local_fn(x: int) -> int:
        return x

    local_fn.__module__ = "__main__"
    local = af.node(name="local_fn_main")(local_fn)

    @af.workflow
    def uses_main(x: int):
        return local(x)

    remote = af.Client(redis_url, settings=settings)  # no workers in this process
    with pytest.raises(af.WorkflowError, match=r"__main__.*autoflow worker"):
        remote.execute(uses_main, x=1)
    assert remote.runs() == []
    remote.close()
    here = af.Client(redis_url, settings=settings, workers=1)  # runs them itself: fine
    assert here.execute(uses_main, x=3).result(timeout=10) == 3
    here.close()


def test_immediate_mode_needs_no_server(settings: af.Settings) -> None:
    client = af.Client(immediate=True, settings=settings)
    run = client.execute(marked, tag="now")
    assert run.status().status is RunStatus.COMPLETED  # done by the time execute returns
    assert client.backend.kind == "memory" and isinstance(client.backend.store, object)
    assert types.SimpleNamespace(x=Ready("r", "n", 1)).x.attempt == 1


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_run_waiting_for_the_slot_starts_as_soon_as_the_run_holding_it_ends(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings
) -> None:
    """On Redis a worker books an ended run ahead of its next queue read (no round trip of
    its own); the run waiting for the slot still starts at once, not after a queue poll."""
    client = _client(kind, request, settings, workflow_concurrency=1, node_concurrency=1)
    try:
        runs = [client.execute(marked, tag=f"r{i}") for i in range(4)]
        infos = [run.wait(timeout=20) for run in runs]
        for before, after in itertools.pairwise(infos):
            assert after.started_at is not None and before.finished_at is not None
            assert (after.started_at - before.finished_at).total_seconds() < 0.3
        # Every run booked, no slot still held: the last run's worker books it ahead of its
        # next queue read, which may come a moment after the run's end is seen here.
        deadline = time.monotonic() + 2.0
        while client.stats().workflow.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.stats().workflow.active == 0
    finally:
        client.close()


@af.node(retries=0)
def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@af.workflow(name="napping")
def _napping(seconds: float = 0.5):
    return _nap(seconds)


def test_a_run_that_ends_while_its_worker_stops_is_booked(redis_url: str, settings: af.Settings) -> None:
    """A worker thread puts an ended run's bookkeeping off until its next queue read; a
    stopping worker makes none, so it sends it as it stops: the slot is freed at once."""
    client = af.Client(redis_url, settings=settings.model_copy(update={"workflow_concurrency": 1}), workers=1)
    run = client.execute(_napping, seconds=0.5)
    time.sleep(0.2)
    client.close()  # graceful: the running node finishes first
    watcher = af.Client(redis_url, settings=settings, workers=0)
    try:
        assert watcher.status(run.id).status is RunStatus.COMPLETED
        store = watcher.backend.store
        assert isinstance(store, RedisStore)
        assert store.r.smembers(store._g("active")) == set()  # its slot is free
        assert store.r.zscore(store._g("done:completed"), run.id) is not None  # in the history
    finally:
        watcher.close()
