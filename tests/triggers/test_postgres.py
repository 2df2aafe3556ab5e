"""Database-change triggers on the machine's real PostgreSQL (a database of our own).

Listeners are driven two ways: ``drain()`` by hand where the order of events matters to
the test, real listener threads where connections, kills and reconnections matter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import autoflow as af
from autoflow.models import DbTriggerInfo
from autoflow.triggers import Listener
from autoflow.triggers.postgres import names
from tests.triggers import flows
from tests.triggers.conftest import wait_for

try:
    import psycopg
except ImportError:  # pg_url then skips these tests, or fails them under CI=true
    psycopg = None

FAST = {"interval": 0.05, "backoff": (0.05, 2.0, 0.5)}


@pytest.fixture
def client(idle_client: af.Client) -> af.Client:
    return idle_client


@pytest.fixture
def db(pg_url: str) -> Iterator[Any]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


def activate(client: af.Client, pg_url: str, table: str, **kwargs: Any) -> DbTriggerInfo:
    return client.db_triggers.activate(
        flows.on_event, kind="postgres", table=table, url=pg_url, event_input="event", **kwargs
    )


def drain(client: af.Client, info: DbTriggerInfo) -> int:
    """Handle every pending event now (no thread); returns how many."""
    source = client.db_triggers.open_source(info, listen=False)
    listener = Listener(info, client.db_triggers.records, client, client.db_triggers.open_source)
    try:
        total = 0
        while n := listener.drain(source):
            total += n
        return total
    finally:
        source.close()


def events(client: af.Client) -> list[dict[str, Any]]:
    runs = client.runs(workflow="trg_event", limit=100_000)
    return sorted((r.trigger_data for r in runs), key=lambda d: d["event_id"])


def test_insert_update_delete_start_one_run_each(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table)
    db.execute(f"INSERT INTO {pg_table} (name, qty) VALUES ('apple', 1)")
    db.execute(f"UPDATE {pg_table} SET qty = 2 WHERE name = 'apple'")
    db.execute(f"DELETE FROM {pg_table} WHERE name = 'apple'")
    assert drain(client, info) == 3
    assert drain(client, info) == 0  # handled events are gone
    got = events(client)
    assert [e["op"] for e in got] == ["INSERT", "UPDATE", "DELETE"]
    assert got[0]["new"] == {"id": 1, "name": "apple", "qty": 1, "note": None} and got[0]["old"] is None
    assert (got[1]["old"]["qty"], got[1]["new"]["qty"]) == (1, 2)
    assert got[2]["new"] is None and got[2]["old"]["id"] == 1
    run = client.runs(workflow="trg_event", limit=1)[0]
    assert run.trigger == "database" and run.inputs["event"] == run.trigger_data
    info = client.db_triggers.get(info.id)
    assert (info.events, info.last_event_id) == (3, got[-1]["event_id"])


def test_only_the_chosen_operations(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table, operations=["insert"])
    db.execute(f"INSERT INTO {pg_table} (name) VALUES ('a')")
    db.execute(f"UPDATE {pg_table} SET qty = 5")
    assert drain(client, info) == 1


def test_big_rows_are_cut_to_their_key(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table, max_row_bytes=200)
    db.execute(f"INSERT INTO {pg_table} (name, note) VALUES ('big', repeat('x', 5000))")
    drain(client, info)
    [event] = events(client)
    assert event["truncated"] is True and event["new"] == {"id": 1}


def test_a_rolled_back_transaction_starts_nothing(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table)
    with pytest.raises(RuntimeError), db.transaction():
        db.execute(f"INSERT INTO {pg_table} (name) VALUES ('ghost')")
        raise RuntimeError("roll back")
    db.execute(f"INSERT INTO {pg_table} (name) VALUES ('real')")
    assert drain(client, info) == 1
    assert [e["new"]["name"] for e in events(client)] == ["real"]


def test_a_transaction_committing_late_is_not_skipped(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    """Event ids are taken at write time, commits come in another order: the slow
    transaction's event (the smaller id) is handled after the fast one's — an id
    watermark would have skipped it."""
    info = activate(client, pg_url, pg_table)
    with psycopg.connect(pg_url) as slow:
        slow.execute(f"INSERT INTO {pg_table} (name) VALUES ('slow')")  # open transaction, first id
        db.execute(f"INSERT INTO {pg_table} (name) VALUES ('fast')")
        assert drain(client, info) == 1
        slow.commit()
    assert drain(client, info) == 1
    got = events(client)
    assert [e["new"]["name"] for e in got] == ["slow", "fast"]  # by event id: slow came first
    assert client.db_triggers.get(info.id).last_event_id == got[1]["event_id"]


def test_a_listener_thread_wakes_on_notify(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table, poll_interval=30.0)  # polling alone would take 30 s
    listeners = client.db_triggers.listeners(**FAST)
    listeners.start()
    try:
        wait_for(lambda: info.id in listeners.running)
        wait_for(lambda: listeners.running[info.id][1].connects == 1)
        db.execute(f"INSERT INTO {pg_table} (name) VALUES ('ping')")
        wait_for(lambda: len(events(client)) == 1, timeout=5)
    finally:
        listeners.stop()


def _backend_pids(db: Any, trigger_id: str) -> list[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        (f"autoflow-trigger:{trigger_id}",),
    ).fetchall()
    return [r[0] for r in rows]


def test_listener_killed_mid_stream_loses_and_doubles_nothing(
    client: af.Client, pg_url: str, pg_table: str, db: Any
) -> None:
    """pg_terminate_backend on the listener's connection, three times, while rows keep
    coming in 40 transactions: every row gets exactly one run."""
    info = activate(client, pg_url, pg_table, poll_interval=0.05)
    listeners = client.db_triggers.listeners(**FAST)
    listeners.start()
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for batch in range(40):
                with conn.transaction():
                    for i in range(25):
                        conn.execute(f"INSERT INTO {pg_table} (name, qty) VALUES (%s, %s)", (f"r{batch}", i))
                if stop.wait(0.01):
                    return

    try:
        wait_for(lambda: _backend_pids(db, info.id))
        thread = threading.Thread(target=writer)
        thread.start()
        for kill in range(3):
            wait_for(lambda k=kill: len(events(client)) > 150 * (k + 1), timeout=20)
            [pid] = _backend_pids(db, info.id)
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for(lambda p=pid: _backend_pids(db, info.id) not in ([], [p]), timeout=10)  # reconnected
        thread.join(30)
        wait_for(lambda: len(events(client)) >= 1000, timeout=30)
        listener = listeners.running[info.id][1]
    finally:
        stop.set()
        listeners.stop()
    got = events(client)
    ids = [e["event_id"] for e in got]
    assert len(ids) == len(set(ids)) == 1000
    assert len({(e["new"]["name"], e["new"]["qty"]) for e in got}) == 1000
    assert listener.connects == 4  # the first connection and three reconnections


@pytest.mark.slow
def test_ten_thousand_rows_in_one_transaction(client: af.Client, pg_url: str, pg_table: str, db: Any) -> None:
    info = activate(client, pg_url, pg_table)
    db.execute(f"INSERT INTO {pg_table} (name, qty) SELECT 'bulk', g FROM generate_series(1, 10000) g")
    assert drain(client, info) == 10_000
    got = events(client)
    assert len(got) == 10_000 and len({e["event_id"] for e in got}) == 10_000
    assert sorted(e["new"]["qty"] for e in got) == list(range(1, 10_001))


def _connections(db: Any) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0])


def _installed(db: Any, trigger_id: str) -> tuple[int, int]:
    """How many database triggers and functions of ``trigger_id`` exist."""
    n = names(trigger_id)
    triggers = db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (n["trigger"],)).fetchone()[0]
    functions = db.execute("SELECT count(*) FROM pg_proc WHERE proname = %s", (n["function"],)).fetchone()[0]
    return int(triggers), int(functions)


def test_activate_deactivate_fifty_times_keeps_connections_stable(
    sqlite_idle_client: af.Client, pg_url: str, pg_table: str, db: Any
) -> None:
    """(The connections are the watched database's: one store is enough.)"""
    client = sqlite_idle_client
    baseline = _connections(db)
    listeners = client.db_triggers.listeners(**FAST)
    listeners.start()
    try:
        for _ in range(50):
            info = activate(client, pg_url, pg_table, id="flappy", poll_interval=0.05)
            wait_for(lambda: _backend_pids(db, "flappy"), timeout=5)  # its listener is connected
            client.db_triggers.deactivate(info.id)
            wait_for(lambda: not _backend_pids(db, "flappy"), timeout=5)  # and gone
            assert _connections(db) <= baseline + 1
            assert _installed(db, "flappy") == (0, 0)
    finally:
        listeners.stop()
    wait_for(lambda: _connections(db) == baseline, timeout=5)
    assert client.db_triggers.get("flappy").active is False


def test_deactivate_drops_trigger_and_function_and_pending_events(
    client: af.Client, pg_url: str, pg_table: str, db: Any
) -> None:
    info = activate(client, pg_url, pg_table)
    db.execute(f"INSERT INTO {pg_table} (name) VALUES ('pending')")
    assert _installed(db, info.id) == (1, 1)
    done = client.db_triggers.deactivate(info.id)
    assert done.active is False and done.last_error is None
    assert _installed(db, info.id) == (0, 0)
    db.execute(f"INSERT INTO {pg_table} (name) VALUES ('after')")  # nothing captures it any more
    count = "SELECT count(*) FROM autoflow_outbox WHERE trigger_id = %s"
    assert db.execute(count, (info.id,)).fetchone()[0] == 0
    client.db_triggers.delete(info.id)
    assert client.db_triggers.list() == []


def test_secrets_never_stored_or_shown(client: af.Client, pg_url: str, pg_table: str, monkeypatch: Any) -> None:
    canary = "Canary-Pa55-7731"
    secret_url = pg_url.replace("postgres@", f"postgres:{canary}@")
    with pytest.raises(af.InputError) as caught:
        activate(client, secret_url, pg_table)
    assert canary not in str(caught.value) and "url_env" in str(caught.value)
    monkeypatch.setenv("SHOP_DB_URL", secret_url)  # trust auth: the password is not checked
    info = client.db_triggers.activate(
        flows.on_event, kind="postgres", table=pg_table, url_env="SHOP_DB_URL", event_input="event"
    )
    stored = client.db_triggers.records.get_record("dbtrigger", info.id)
    assert stored is not None and canary not in stored[0] and "SHOP_DB_URL" in stored[0]
    assert canary not in repr(info)
    bad = secret_url.replace("127.0.0.1:5432", "127.0.0.1:1")
    monkeypatch.setenv("BROKEN_DB_URL", bad)
    with pytest.raises(af.BackendError) as down:
        client.db_triggers.activate(flows.on_event, kind="postgres", table=pg_table, url_env="BROKEN_DB_URL")
    assert canary not in str(down.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"table": "no_such_table"}, af.InputError, "table public.no_such_table does not exist"),
        ({"table": "x; drop table y"}, af.InputError, "table must be a plain SQL name"),
        ({"operations": ["TRUNCATE"]}, af.InputError, "operations must be"),
        ({"kind": "mysql"}, af.InputError, "kind must be one of"),
        ({"event_input": "nope"}, af.InputError, "event_input 'nope' is not an input"),
        ({"max_row_bytes": 10}, af.InputError, "max_row_bytes"),
        ({"id": "bad id"}, af.InputError, "trigger id must match"),
    ],
)
def test_bad_activation_is_refused_and_installs_nothing(
    client: af.Client, pg_url: str, pg_table: str, db: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    params: dict[str, Any] = {"table": pg_table, "event_input": "event", **kwargs}
    with pytest.raises(error, match=message):
        client.db_triggers.activate(flows.on_event, url=pg_url, **{"id": "refused", **params})
    assert _installed(db, "refused") == (0, 0)
    assert client.db_triggers.list() == []


def test_an_unreachable_database_is_retried_with_backoff(client: af.Client, pg_url: str, pg_table: str) -> None:
    info = activate(client, pg_url, pg_table)
    moved = info.model_copy(update={"url": "postgresql://postgres@127.0.0.1:1/nowhere"})
    attempts: list[float] = []

    def opener(i: DbTriggerInfo) -> Any:
        attempts.append(1.0)
        return client.db_triggers.open_source(i)

    listener = Listener(moved, client.db_triggers.records, client, opener, backoff=(0.01, 2.0, 0.08))
    listener.start()
    try:
        wait_for(lambda: len(attempts) >= 5, timeout=10)
        wait_for(lambda: "BackendError" in (client.db_triggers.get(info.id).last_error or ""))
    finally:
        listener.stop()
    assert listener.connects == 0


def test_activating_again_on_another_table_moves_the_trigger(
    client: af.Client, pg_url: str, pg_table: str, db: Any
) -> None:
    activate(client, pg_url, pg_table, id="moving")
    other = f"{pg_table}_b"
    db.execute(f"CREATE TABLE {other} (id serial PRIMARY KEY, name text)")
    info = activate(client, pg_url, other, id="moving")
    on = "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE 'autoflow_%%'"
    assert db.execute(on, (pg_table,)).fetchone()[0] == 0
    assert db.execute(on, (other,)).fetchone()[0] == 1
    db.execute(f"INSERT INTO {pg_table} (name) VALUES ('old table')")
    db.execute(f"INSERT INTO {other} (name) VALUES ('new table')")
    assert drain(client, info) == 1
    assert [e["table"] for e in events(client)] == [other]
