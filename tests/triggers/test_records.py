"""The trigger-record contract (versioned compare-and-set + wake index), on SQLite and Redis."""

from __future__ import annotations

import threading

from autoflow.store.base import Store
from autoflow.store.schedules import trigger_store


def test_create_is_refused_when_the_id_exists(store: Store) -> None:
    records = trigger_store(store)
    assert records.put_record("schedule", "a", '{"n": 1}', version=None, wake_at=10.0) == 1
    assert records.put_record("schedule", "a", '{"n": 2}', version=None, wake_at=10.0) is None
    assert records.get_record("schedule", "a") == ('{"n": 1}', 1)
    assert records.get_record("schedule", "missing") is None
    assert records.get_record("dbtrigger", "a") is None  # kinds are separate


def test_compare_and_set_on_the_version(store: Store) -> None:
    records = trigger_store(store)
    records.put_record("schedule", "a", "v1", version=None, wake_at=None)
    assert records.put_record("schedule", "a", "v2", version=1, wake_at=None) == 2
    assert records.put_record("schedule", "a", "stale", version=1, wake_at=None) is None
    assert records.get_record("schedule", "a") == ("v2", 2)
    assert records.put_record("schedule", "missing", "x", version=1, wake_at=None) is None


def test_wake_index_orders_and_follows_writes(store: Store) -> None:
    records = trigger_store(store)
    assert records.next_wake("schedule") is None
    records.put_record("schedule", "late", "x", version=None, wake_at=300.0)
    records.put_record("schedule", "early", "x", version=None, wake_at=100.0)
    records.put_record("schedule", "paused", "x", version=None, wake_at=None)
    assert records.due_records("schedule", 50.0, 10) == []
    assert records.due_records("schedule", 300.0, 10) == ["early", "late"]
    assert records.due_records("schedule", 300.0, 1) == ["early"]
    assert records.next_wake("schedule") == 100.0
    records.put_record("schedule", "early", "x", version=1, wake_at=None)  # paused: out of the index
    assert records.due_records("schedule", 1e12, 10) == ["late"]
    records.put_record("schedule", "late", "x", version=1, wake_at=1.5)
    assert records.next_wake("schedule") == 1.5


def test_list_and_delete(store: Store) -> None:
    records = trigger_store(store)
    for name in ("b", "a", "c"):
        records.put_record("dbtrigger", name, name.upper(), version=None, wake_at=None)
    assert records.list_records("dbtrigger") == [("A", 1), ("B", 1), ("C", 1)]
    assert records.list_records("schedule") == []
    assert records.delete_record("dbtrigger", "b") is True
    assert records.delete_record("dbtrigger", "b") is False
    assert [b for b, _ in records.list_records("dbtrigger")] == ["A", "C"]


def test_concurrent_writers_never_lose_an_update(store: Store) -> None:
    """Eight threads increment one counter by read + CAS + retry: no increment is lost."""
    records = trigger_store(store)
    records.put_record("schedule", "n", "0", version=None, wake_at=None)

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                got = records.get_record("schedule", "n")
                assert got is not None
                if records.put_record("schedule", "n", str(int(got[0]) + 1), version=got[1], wake_at=None):
                    break

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert records.get_record("schedule", "n") == ("200", 201)
