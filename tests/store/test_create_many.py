"""Creating many runs of one definition at once (``Store.create_many_and_admit``, behind
``Client.execute_many``), on every store: the same runs, admissions and messages as one
``create_and_admit`` per run, in a few round trips or transactions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from autoflow import codec
from autoflow.models import RunStatus
from autoflow.store.base import NewRun, NodeSeed, Ready, Store
from autoflow.store.redis import RedisStore
from tests.conftest import start_redis
from tests.store.test_contract import run_node

#: a -> b, and c alone: two roots per run.
SEEDS = (
    NodeSeed("a", "tests:fn", (), ("b",)),
    NodeSeed("b", "tests:fn", ("a",), ()),
    NodeSeed("c", "tests:fn", (), ()),
)


def _runs(count: int, *, priority: int = 0, keys: Sequence[str] | None = None) -> list[NewRun]:
    return [
        NewRun(
            id=codec.keyed_run_id(keys[i]) if keys else codec.new_run_id(),
            workflow="many",
            digest="m" * 32,
            inputs={"i": i},
            output={"$ref": "b"},
            created_at=time.time(),
            priority=priority,
            idempotency_key=keys[i] if keys else None,
        )
        for i in range(count)
    ]


def _status(store: Store, run_id: str) -> RunStatus:
    info = store.get_run(run_id)
    assert info is not None, f"run {run_id} was not created"
    return info.status


def _roots(ready: Sequence[Ready]) -> dict[str, list[str]]:
    by_run: dict[str, list[str]] = {}
    for r in ready:
        by_run.setdefault(r.run_id, []).append(r.node_id)
    return {run_id: sorted(nodes) for run_id, nodes in by_run.items()}


def test_runs_are_created_in_order_and_admitted_up_to_the_limit(store: Store) -> None:
    runs = _runs(5)
    ids, ready = store.create_many_and_admit(runs, SEEDS, 2)
    assert ids == [r.id for r in runs]
    assert [_status(store, i) for i in ids] == [RunStatus.RUNNING] * 2 + [RunStatus.PENDING] * 3
    assert _roots(ready) == {ids[0]: ["a", "c"], ids[1]: ["a", "c"]}  # one message per root of each admitted run
    assert [store.get_run(i).inputs for i in ids] == [{"i": i} for i in range(5)]  # type: ignore[union-attr]
    for node in ("a", "b", "c"):
        run_node(store, ids[0], node)
    assert _status(store, ids[0]) is RunStatus.COMPLETED


def test_more_runs_than_one_batch(store: Store) -> None:
    runs = _runs(1_050)  # three batches of creation (500 per round trip or transaction)
    ids, ready = store.create_many_and_admit(runs, SEEDS, 2_000)
    assert ids == [r.id for r in runs]
    assert _roots(ready) == {i: ["a", "c"] for i in ids}
    assert len(ready) == 2 * len(ids)
    assert store.stats().workflow.waiting == 0


def test_a_run_found_by_its_key_is_not_created_again(store: Store) -> None:
    keys = [f"import-{i}" for i in range(3)]
    first, _ = store.create_many_and_admit(_runs(3, keys=keys), SEEDS, 10)
    again, ready = store.create_many_and_admit(_runs(3, keys=keys), SEEDS, 10)
    assert again == first
    assert ready == []  # already started: no second message for any root
    assert len(store.list_runs("many", None, 100)) == 3


def test_with_messages_sent_in_the_start_round_trip(store: Store) -> None:
    """Given the dispatcher's queue commands, Redis sends the roots' messages of the new
    runs in the round trip that starts them (and does not return them to be sent again);
    SQLite returns them (its messages go through the dispatcher)."""
    queue = f"{store.ns}:test-queue" if isinstance(store, RedisStore) else ""
    sent: list[Ready] = []

    def enqueue(items: Sequence[Ready], server: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        sent.extend(items)
        return [("RPUSH", queue, f"{r.run_id}/{r.node_id}") for r in items]

    ids, ready = store.create_many_and_admit(_runs(4), SEEDS, 3, enqueue=enqueue)
    assert _status(store, ids[3]) is RunStatus.PENDING
    if not isinstance(store, RedisStore):
        assert sent == [] and _roots(ready) == {i: ["a", "c"] for i in ids[:3]}
        return
    assert ready == []
    assert _roots(sent) == {i: ["a", "c"] for i in ids[:3]}
    assert sorted(store.r.lrange(queue, 0, -1)) == sorted(f"{r.run_id}/{r.node_id}" for r in sent)
    # A run of an earlier call admitted now: its messages are returned, to be sent as usual.
    more, ready = store.create_many_and_admit(_runs(1), SEEDS, 5, enqueue=enqueue)
    assert _roots(ready) == {ids[3]: ["a", "c"]}
    assert _status(store, more[0]) is RunStatus.RUNNING


@pytest.fixture
def private(tmp_path: Path) -> Any:
    """A redis-server of this test's own (its functions and scripts are deleted here)."""
    url, stop = start_redis(tmp_path)
    yield url
    stop()


@pytest.mark.parametrize("form", ["functions", "scripts"])
def test_a_server_that_lost_its_scripts_gets_them_again(private: str, form: str) -> None:
    store = RedisStore.from_url(private, namespace="many")
    if form == "scripts":
        store.use_scripts()
    try:
        store.create_many_and_admit(_runs(2), SEEDS, 10)
        admin = redis.Redis.from_url(private)
        admin.function_flush()  # as after a restart without persistence
        admin.script_flush()
        ids, ready = store.create_many_and_admit(_runs(3), SEEDS, 10)
        assert _roots(ready) == {i: ["a", "c"] for i in ids}
        assert all(_status(store, i) is RunStatus.RUNNING for i in ids)
    finally:
        store.close()


@pytest.mark.parametrize("many", [True, False])
def test_runs_admitted_while_their_creation_script_was_missing_are_started(private: str, many: bool) -> None:
    """The server lost the creation script but not the admission's (Redis 6, or functions
    flushed): the first batch puts the runs in the admission queue without creating them
    and the admission picks them; sent again, the creation makes them and the runs the
    admission picked start now (they used to wait for the reaper) and leave the queue."""
    store = RedisStore.from_url(private, namespace="lost")
    store.use_scripts()
    admin = redis.Redis.from_url(private)
    try:
        admin.script_flush()
        admin.script_load(store._wire.scripts["admit"].script)
        runs = _runs(4)
        if many:
            ids, ready = store.create_many_and_admit(runs, SEEDS, 3)
        else:
            ids, ready = [], []
            for run in runs:
                run_id, more = store.create_and_admit(run, SEEDS, 3)
                ids.append(run_id)
                ready += more
        assert _roots(ready) == {i: ["a", "c"] for i in ids[:3]}
        assert [_status(store, i) for i in ids] == [RunStatus.RUNNING] * 3 + [RunStatus.PENDING]
        assert admin.zrange("lost:{_g}:pending", 0, -1) == [ids[3].encode()]
        assert admin.scard("lost:{_g}:active") == 3
    finally:
        store.close()


def test_creation_times_are_read_in_one_go(store: Store) -> None:
    runs = _runs(3)
    ids, _ = store.create_many_and_admit(runs, SEEDS, 10)
    assert store.created_at([*ids, "no-such-run"]) == [pytest.approx(r.created_at, abs=1e-6) for r in runs] + [None]
    assert store.created_at([]) == []
