"""Redis stats while a run's global bookkeeping is put off (store/redis_reads.py).

A worker thread books an ended run (``book``: it leaves the ``active`` set, freeing its
WORKFLOW_CONCURRENCY slot) ahead of its next queue read, or the reaper does it if the worker
died first. Until then the run holds its slot: ``workflow.active`` counts it, as admission
does, and ``completed``/``failed`` count it by its status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

import autoflow as af
from autoflow.models import RunStatus
from autoflow.store import redis_line
from autoflow.store.redis import RedisStore
from autoflow.store.redis_line import Lines
from tests.store.test_contract import ERR, LEASE, seed, start


@pytest.fixture
def store(redis_url: str, settings: af.Settings) -> Iterator[RedisStore]:
    made = RedisStore.from_url(redis_url, namespace=settings.namespace)
    yield made
    made.close()
    redis_line._later.__dict__.clear()  # this thread is no queue consumer's any more


def _end_with_booking_put_off(store: RedisStore, redis_url: str, outcome: str) -> str:
    """Run a one-node run to ``outcome`` on a thread marked as a queue consumer's: its
    bookkeeping waits for this thread's next round trip to the server."""
    run_id, ready = start(store, {"a": []})
    assert [r.node_id for r in ready] == ["a"]
    assert store.claim(run_id, "a", 1, "t", LEASE) is not None
    Lines(redis.ConnectionPool.from_url(redis_url)).returning()  # as dispatch's consumer thread does
    if outcome == "completed":
        progress = store.complete(run_id, "a", "t", "1", [])
    else:
        progress = store.fail(run_id, "a", "t", ERR, None, [])
    assert progress.finished is RunStatus(outcome)
    assert redis_line._later.pending  # the bookkeeping waits
    return run_id


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_run_ended_but_not_booked_still_counts_as_active(store: RedisStore, redis_url: str, outcome: str) -> None:
    before = store.stats()
    _end_with_booking_put_off(store, redis_url, outcome)
    stats = store.stats()
    assert stats.workflow.active - before.workflow.active == 1  # it holds its slot
    assert getattr(stats.workflow, outcome) - getattr(before.workflow, outcome) == 1  # as its status says
    assert stats.node.active == before.node.active and stats.node.waiting == before.node.waiting
    assert getattr(stats.node, outcome) - getattr(before.node, outcome) == 1
    store._wire.send("PING")  # this thread's next trip carries the bookkeeping
    assert not redis_line._later.pending.get(store._wire.server)
    after = store.stats()
    assert after.workflow.active == before.workflow.active  # the slot is free
    assert getattr(after.workflow, outcome) - getattr(before.workflow, outcome) == 1  # counted once
    assert getattr(after.node, outcome) - getattr(before.node, outcome) == 1


def test_active_agrees_with_admission_until_the_reaper_books_a_run_whose_worker_died(
    store: RedisStore, redis_url: str
) -> None:
    """With one slot, a waiting run is not admitted while the ended run holds it: stats say
    so (active 1, waiting 1) rather than an idle queue (active 0) that does not move."""
    assert store.admit(1000) == []  # this test's namespace starts empty
    ended = _end_with_booking_put_off(store, redis_url, "completed")
    redis_line._later.__dict__.clear()  # the worker died: its bookkeeping is lost
    waiting = seed(store, {"a": []})
    assert store.admit(1) == []
    stats = store.stats()
    assert (stats.workflow.active, stats.workflow.waiting, stats.workflow.completed) == (1, 1, 1)
    store.reap(time.time(), 1000.0, 3)  # books the ended run
    stats = store.stats()
    assert (stats.workflow.active, stats.workflow.waiting, stats.workflow.completed) == (0, 1, 1)
    assert [r.run_id for r in store.admit(1)] == [waiting]
    assert store.run_status(ended) is RunStatus.COMPLETED
    assert store.stats().workflow.active == 1  # the new holder of the slot
