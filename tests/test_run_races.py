"""Runs never hang on a race: pause vs completion, a client killed while creating a run,
one idempotency key from two clients at once, sub-workflows under WORKFLOW_CONCURRENCY=1,
workers whose clocks are off (issue 7, items 1-4 and 9)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import autoflow as af
from autoflow import codec
from autoflow.engine.subflows import SubFlows
from autoflow.models import NodeStatus, RunStatus
from autoflow.store.base import NewRun, NodeSeed, Store
from autoflow.store.redis import RedisStore
from tests.resources.dags import add


@af.workflow(name="race_add")
def race_add(a: int, b: int):
    return add(a, b)


def _new_run(store: Store, key: str | None = None) -> str:
    run = NewRun(
        id=codec.new_run_id(),
        workflow="wf",
        digest="d" * 32,
        inputs={},
        output={"$ref": "a"},
        created_at=time.time(),
        idempotency_key=key,
    )
    return store.create_run(run, [NodeSeed("a", "t", (), ())])


# -- 1. pause racing a run that completes ---------------------------------------------------


def test_pause_of_a_finished_run_changes_nothing(store: Store) -> None:
    run_id = _new_run(store)
    store.admit(10)
    store.claim(run_id, "a", 1, "tok", 30)
    assert store.complete(run_id, "a", "tok", "1", []).finished is RunStatus.COMPLETED
    assert store.pause_run(run_id) is RunStatus.COMPLETED
    assert store.resume_run(run_id) == []
    assert store.run_status(run_id) is RunStatus.COMPLETED


class _CompletesAfterStatusRead:
    """A Redis client proxy: right after anyone reads a run's status, the run's last node
    completes (what another worker does in the race window of a read-then-write pause)."""

    def __init__(self, real: Any, finish: Any) -> None:
        self._real = real
        self._finish = finish

    def hget(self, key: str, field: str) -> Any:
        value = self._real.hget(key, field)
        if field == "status" and self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_pause_and_completion_race_on_redis(redis_url: str, settings: af.Settings) -> None:
    store = RedisStore.from_url(redis_url, namespace=settings.namespace)
    try:
        run_id = _new_run(store)
        store.admit(10)
        store.claim(run_id, "a", 1, "tok", 30)
        other = RedisStore.from_url(redis_url, namespace=settings.namespace)
        proxy = _CompletesAfterStatusRead(store.r, lambda: other.complete(run_id, "a", "tok", "1", []))
        store.r = proxy  # type: ignore[assignment]
        status = store.pause_run(run_id)
        store.r = proxy._real
        if proxy._finish is not None:  # pause read nothing it could act on stale: complete now
            proxy._finish()
        assert status in (RunStatus.PAUSED, RunStatus.COMPLETED)
        store.resume_run(run_id)
        assert store.run_status(run_id) is RunStatus.COMPLETED  # never "paused"/"running" with nothing left
        other.close()
    finally:
        store.close()


# -- 2. a client killed while it creates a run --------------------------------------------


@pytest.fixture
def redis_client(redis_url: str, settings: af.Settings) -> Iterator[af.Client]:
    client = af.Client(redis_url, settings=settings, workers=2)
    yield client
    client.close()


def _killed_before_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client dies after the creation script ran and before the indexes were written:
    only the journal entry and the run itself exist."""
    monkeypatch.setattr(RedisStore, "_index_commands", lambda self, *args: [])


def test_a_run_whose_creator_died_is_found_by_the_reaper(
    redis_client: af.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        _killed_before_indexing(patch)
        run = redis_client.execute(race_add, a=1, b=2)
    assert redis_client.status(run.id).status is RunStatus.PENDING  # invisible to admission
    store = redis_client.backend.store
    store.reap(time.time() + 60, 1000.0, 3)  # the reaper, once the journal entry is old
    store.admit(50)
    assert run.result(timeout=10) == 3
    assert redis_client.runs(workflow="race_add")[0].id == run.id  # in the history too


def test_a_retry_with_the_same_key_finishes_a_half_created_run(
    redis_client: af.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        _killed_before_indexing(patch)
        first = redis_client.execute(race_add, a=2, b=2, idempotency_key="half-made")
    again = redis_client.execute(race_add, a=2, b=2, idempotency_key="half-made")
    assert again.id == first.id
    assert again.result(timeout=10) == 4


# -- 3. one idempotency key from two clients at once --------------------------------------


def test_one_key_one_run_under_concurrent_submissions(client: af.Client) -> None:
    if client.backend.kind == "memory":
        pytest.skip("immediate mode runs in the caller's thread")
    keys = [f"order-{i}" for i in range(30)]
    ids: dict[str, set[str]] = {key: set() for key in keys}
    barrier = threading.Barrier(3)

    def submit() -> None:
        barrier.wait()
        for key in keys:
            ids[key].add(client.execute(race_add, a=1, b=1, idempotency_key=key).id)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(len(found) == 1 for found in ids.values()), ids
    history = [r.id for r in client.runs(workflow="race_add", limit=200)]
    assert len(history) == len(set(history)) == len(keys)
    for found in ids.values():
        assert client.result(next(iter(found)), timeout=20) == 2


# -- 4. sub-workflows with WORKFLOW_CONCURRENCY=1 ---------------------------------------


@af.workflow
def child_add(a: int, b: int):
    return add(a, b)


@af.workflow
def parent_of_child(a: int):
    return add(child_add(a, 1), 10)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_child_run_never_waits_for_its_parents_admission_slot(
    kind: str, settings: af.Settings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker dies after the parent node started waiting for its child and before the
    # child was started: the child is left pending, needing admission, whose only slot
    # (WORKFLOW_CONCURRENCY=1) is held by the parent.

    def dies_before_starting_the_child(self: SubFlows, claim: Any, token: str, child: Any, send: Any) -> Any:
        child_id = self.store.create_run(child.run, child.nodes)
        return self.store.await_child(claim.run_id, claim.node_id, token, child_id, [])  # ...and no start_run

    monkeypatch.setattr(SubFlows, "start_child", dies_before_starting_the_child)
    one = settings.model_copy(update={"workflow_concurrency": 1})
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    with af.Client(url, settings=one, workers=2) as client:
        run = client.execute(parent_of_child, a=1)
        assert run.result(timeout=15) == 12
        second = client.execute(parent_of_child, a=5)  # and the slot is free again
        assert second.result(timeout=15) == 16


def test_sub_workflows_under_concurrency_one_run_to_the_end(client: af.Client) -> None:
    one = client.settings.model_copy(update={"workflow_concurrency": 1})
    client.settings = one
    runs = [client.execute(parent_of_child, a=i) for i in range(3)]
    assert [r.result(timeout=20) for r in runs] == [11, 12, 13]


# -- 9. leases on the store's clock ------------------------------------------------------


def test_a_worker_whose_clock_is_late_keeps_its_lease(
    redis_url: str, settings: af.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, namespace=settings.namespace)
    try:
        run_id = _new_run(store)
        store.admit(10)
        late = time.time
        monkeypatch.setattr(time, "time", lambda: late() - 20)  # this worker's clock is 20 s late
        assert store.claim(run_id, "a", 1, "tok", 15) is not None
        assert not store.heartbeat([(run_id, "a", "tok")], 15).lost
        monkeypatch.undo()
        assert store.reap(time.time(), 1000.0, 3) == []  # a reaper with a good clock
        info = store.get_run(run_id)
        assert info is not None and info.nodes["a"].status is NodeStatus.RUNNING
        assert store.reap(time.time() + 16, 1000.0, 3) != []  # the lease does expire, 15 s later
    finally:
        store.close()
