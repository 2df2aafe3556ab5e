"""Database-change triggers on the user's own SQLite file: SQLite triggers + polling."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from autoflow.models import DbTriggerInfo
from autoflow.triggers import Listener
from tests.triggers import flows
from tests.triggers.conftest import wait_for


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, photo BLOB)")
    yield str(path), conn
    conn.close()


def activate(client: af.Client, path: str, **kwargs: Any) -> DbTriggerInfo:
    return client.db_triggers.activate(
        flows.on_event, kind="sqlite", table="orders", url=f"sqlite:///{path}", event_input="event", **kwargs
    )


def drain(client: af.Client, info: DbTriggerInfo) -> int:
    source = client.db_triggers.open_source(info)
    listener = Listener(info, client.db_triggers.records, client, client.db_triggers.open_source)
    try:
        return listener.drain(source)
    finally:
        source.close()


def events(client: af.Client) -> list[dict[str, Any]]:
    return sorted(
        (r.trigger_data for r in client.runs(workflow="trg_event", limit=10_000)), key=lambda d: d["event_id"]
    )


def test_changes_become_runs(idle_client: af.Client, shop: tuple[str, sqlite3.Connection]) -> None:
    path, conn = shop
    info = activate(idle_client, path)
    conn.execute("INSERT INTO orders (name, qty, photo) VALUES ('pear', 1, x'cafe')")
    conn.execute("UPDATE orders SET qty = 3")
    conn.execute("DELETE FROM orders")
    assert drain(idle_client, info) == 3
    assert drain(idle_client, info) == 0
    got = events(idle_client)
    assert [e["op"] for e in got] == ["INSERT", "UPDATE", "DELETE"]
    assert got[0]["new"] == {"id": 1, "name": "pear", "qty": 1, "photo": "CAFE"}  # BLOBs as hex
    assert (got[1]["old"]["qty"], got[1]["new"]["qty"]) == (1, 3)
    assert got[2]["old"]["name"] == "pear" and got[2]["new"] is None
    assert {r.trigger for r in idle_client.runs(workflow="trg_event")} == {"database"}


def test_rollback_and_size_bound(idle_client: af.Client, shop: tuple[str, sqlite3.Connection]) -> None:
    path, conn = shop
    info = activate(idle_client, path, max_row_bytes=100, operations=["INSERT"])
    conn.execute("BEGIN")
    conn.execute("INSERT INTO orders (name) VALUES ('ghost')")
    conn.execute("ROLLBACK")
    conn.execute("INSERT INTO orders (name) VALUES (?)", ("x" * 500,))
    conn.execute("UPDATE orders SET qty = 9")  # not watched
    assert drain(idle_client, info) == 1
    [event] = events(idle_client)
    assert event["truncated"] is True and event["new"] == {"id": 1}


def test_a_listener_polls_and_deactivation_removes_the_triggers(
    idle_client: af.Client, shop: tuple[str, sqlite3.Connection]
) -> None:
    path, conn = shop
    info = activate(idle_client, path, poll_interval=0.02)
    listeners = idle_client.db_triggers.listeners(interval=0.05)
    listeners.start()
    try:
        for i in range(20):
            conn.execute("INSERT INTO orders (name, qty) VALUES ('n', ?)", (i,))
        wait_for(lambda: len(events(idle_client)) == 20)
    finally:
        listeners.stop()
    idle_client.db_triggers.deactivate(info.id)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
    conn.execute("INSERT INTO orders (name) VALUES ('after')")
    assert conn.execute("SELECT count(*) FROM autoflow_outbox").fetchone()[0] == 0
    assert sorted(e["new"]["qty"] for e in events(idle_client)) == list(range(20))


def test_a_missing_table_is_refused(idle_client: af.Client, tmp_path: Path) -> None:
    with pytest.raises(af.InputError, match="table 'orders' does not exist"):
        activate(idle_client, str(tmp_path / "empty.db"))
    assert idle_client.db_triggers.list() == []


def test_an_event_the_workflow_refuses_is_dropped_and_named(
    idle_client: af.Client, shop: tuple[str, sqlite3.Connection]
) -> None:
    path, conn = shop
    conn.execute("CREATE TABLE counts (id INTEGER PRIMARY KEY, qty INTEGER)")
    info = idle_client.db_triggers.activate(
        flows.strict, kind="sqlite", table="counts", url=path, event_input="event", operations=["INSERT"]
    )
    conn.execute("INSERT INTO counts (qty) VALUES ('not a number')")  # SQLite stores the text
    conn.execute("INSERT INTO counts (qty) VALUES (2)")
    assert drain(idle_client, info) == 2
    assert drain(idle_client, info) == 0  # not retried forever
    [run] = idle_client.runs(workflow="trg_strict")
    assert run.inputs["event"]["new"] == {"id": 2, "qty": 2}
    error = idle_client.db_triggers.get(info.id).last_error or ""
    assert error.startswith(f"event {run.trigger_data['event_id'] - 1}: ") and "valid integer" in error
