"""database_save on SQLite, the machine's PostgreSQL and MariaDB (databases of our own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from tests.nodes.util import log_text, one_node

FAST = {"retries": 0}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path, credential: Any) -> Iterator[Any]:
    """A database URL (as credential ``db``) with a fresh ``orders`` table; yields an engine."""
    import sqlalchemy as sa

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    engine = sa.create_engine(url)
    table = f"orders_{request.node.name.split('[')[0][-20:]}".replace("-", "_")
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (order_id VARCHAR(64) PRIMARY KEY, status VARCHAR(20) NOT NULL, "
                "amount INTEGER, paid_at TIMESTAMP NULL)"
            )
        )
    credential("db", url)
    engine.info = {"table": table}  # type: ignore[misc]
    yield engine
    engine.dispose()


def _rows(engine: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(f"SELECT order_id, status, amount FROM {engine.info['table']} ORDER BY order_id")
            )
        ]


def test_upsert_on_a_key_writes_one_row(run_client: af.Client, db: Any) -> None:
    table = db.info["table"]
    config = {
        "table": table,
        "connection": "db",
        "key": "order_id",
        "rows": {"order_id": "o1", "status": "new", "amount": 10, "paid_at": "2026-11-30T10:00:00Z"},
    }
    for _ in range(2):  # a retried or re-run node writes the same row again
        info = run_client.execute(one_node("database_save", config)).wait(timeout=30)
        assert info.status is af.RunStatus.COMPLETED, info.error
    config["rows"] = {"order_id": "o1", "status": "paid", "amount": 12, "paid_at": None}
    info = run_client.execute(one_node("database_save", config)).wait(timeout=30)
    assert info.output == {"table": table, "rows": 1, "mode": "upsert"}
    assert _rows(db) == [("o1", "paid", 12)]


def test_insert_many_rows_in_one_transaction(run_client: af.Client, db: Any) -> None:
    table = db.info["table"]
    rows = [{"order_id": f"o{i}", "status": "new", "amount": i} for i in range(3)]
    info = run_client.execute(one_node("database_save", {"table": table, "connection": "db", "rows": rows})).wait(
        timeout=30
    )
    assert info.output["rows"] == 3 and len(_rows(db)) == 3
    # One bad row (status NOT NULL) and nothing of the batch is written.
    bad = [{"order_id": "x1", "status": "new", "amount": 1}, {"order_id": "x2", "status": None, "amount": 2}]
    info = run_client.execute(one_node("database_save", {"table": table, "connection": "db", "rows": bad}, FAST)).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert [r[0] for r in _rows(db)] == ["o0", "o1", "o2"]


def test_columns_must_exist_identifiers_never_come_from_data(run_client: af.Client, db: Any) -> None:
    table = db.info["table"]
    rows = {"order_id": "o9", 'status" = 1; DROP TABLE x; --': "new"}
    info = run_client.execute(one_node("database_save", {"table": table, "connection": "db", "rows": rows})).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert "has no column(s)" in info.nodes["n"].error.message
    info = run_client.execute(one_node("database_save", {"table": "nope", "connection": "db", "rows": {"a": 1}})).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and "'nope' does not exist" in info.nodes["n"].error.message


@pytest.mark.parametrize("bad", [{"table": "orders; DROP TABLE orders"}, {"key": "id--"}, {"mode": "merge"}])
def test_bad_identifiers_are_refused_when_the_definition_is_built(bad: dict[str, Any]) -> None:
    with pytest.raises(af.WorkflowError):
        one_node("database_save", {"table": "orders", "connection": "db", "rows": {"a": 1}, **bad})


def test_a_connection_error_is_retried_and_the_password_never_shows(run_client: af.Client, credential: Any) -> None:
    from tests.nodes.servers import free_port

    secret = "db-canary-pw-93d1"
    credential("db", f"postgresql+psycopg://app:{secret}@127.0.0.1:{free_port()}/shop")
    config = {"table": "orders", "connection": "db", "rows": {"a": 1}}
    run = run_client.execute(
        one_node("database_save", config, {"retries": 1, "backoff": {"base": 0.01, "jitter": False}})
    )
    info = run.wait(timeout=60)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 2
    assert secret not in info.model_dump_json() + log_text(run_client, run.id)
