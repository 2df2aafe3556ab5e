"""``database_save``: insert or upsert rows with SQLAlchemy Core (PostgreSQL, MariaDB/MySQL, SQLite).

The connection URL is a credential (``connection="orders_db"`` resolves
``AUTOFLOW_CREDENTIAL_ORDERS_DB=postgresql+psycopg://...``). The table is reflected and
every column name in the data must be one of its columns: identifiers are never
interpolated from data. With ``key`` the write is an upsert on those columns (they need a
unique index), so a retried node writes the same row again instead of a second one. All
rows go in one transaction: all or nothing.

Needs the ``database`` extra (``pip install 'autoflow[database]'``): SQLAlchemy, psycopg
(PostgreSQL) and PyMySQL (MariaDB/MySQL).
"""

from __future__ import annotations

import os
import re
import threading
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from autoflow import codec
from autoflow.context import Context
from autoflow.nodes.base import NodeError, builtin, optional_import

__all__ = ["database_save"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_engines: dict[tuple[int, str], Any] = {}
_tables: dict[tuple[int, str, str | None, str], Any] = {}
_lock = threading.Lock()


def _identifier(value: str | None) -> str | None:
    if value is not None and not _IDENT.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _)")
    return value


def _keys(value: str | list[str] | None) -> list[str] | None:
    keys = [value] if isinstance(value, str) else value
    for key in keys or []:
        _identifier(key)
    return keys


def _engine(url: str) -> Any:
    """One pooled engine per process and URL (created after a fork, never shared)."""
    sqlalchemy = optional_import("sqlalchemy", "database", "database_save")
    key = (os.getpid(), url)
    with _lock:
        found = _engines.get(key)
        if found is None:
            try:
                found = sqlalchemy.create_engine(url, pool_pre_ping=True)
            except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
                raise NodeError(
                    f"database_save: the connection URL is not usable: {type(exc).__name__}", retryable=False
                ) from None
            _engines[key] = found
        return found


def _table(engine: Any, url: str, name: str, schema: str | None) -> Any:
    sqlalchemy = optional_import("sqlalchemy", "database", "database_save")
    key = (os.getpid(), url, schema, name)
    with _lock:
        found = _tables.get(key)
    if found is None:
        try:
            found = sqlalchemy.Table(name, sqlalchemy.MetaData(), autoload_with=engine, schema=schema)
        except sqlalchemy.exc.NoSuchTableError:
            raise NodeError(f"database_save: table {name!r} does not exist", retryable=False) from None
        with _lock:
            _tables[key] = found
    return found


def _coerce(column: Any, value: Any) -> Any:
    """JSON values into the column's Python type where drivers insist (date-times)."""
    try:
        wanted = column.type.python_type
    except NotImplementedError:
        return value
    if isinstance(value, str) and wanted in (datetime, date):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise NodeError(
                f"database_save: column {column.name!r}: {value!r} is not an ISO date", retryable=False
            ) from None
        return parsed.date() if wanted is date else parsed
    if isinstance(value, (dict, list)) and wanted is str:
        return codec.dumps(value)
    return value


def _statement(table: Any, rows: list[dict[str, Any]], keys: list[str] | None, dialect: str) -> Any:
    sqlalchemy = optional_import("sqlalchemy", "database", "database_save")
    if not keys:
        return sqlalchemy.insert(table).values(rows)
    updates = [c for c in rows[0] if c not in keys]
    if dialect in ("postgresql", "sqlite"):
        module = optional_import(f"sqlalchemy.dialects.{dialect}", "database", "database_save")
        stmt = module.insert(table).values(rows)
        if not updates:
            return stmt.on_conflict_do_nothing(index_elements=keys)
        return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in updates})
    if dialect in ("mysql", "mariadb"):
        mysql = optional_import("sqlalchemy.dialects.mysql", "database", "database_save")
        stmt = mysql.insert(table).values(rows)
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in (updates or keys)})
    raise NodeError(f"database_save: upsert is not supported on {dialect!r}", retryable=False)


@builtin("database_save", retries=3)
def database_save(
    table: Annotated[str, AfterValidator(_identifier)],
    rows: dict[str, Any] | list[dict[str, Any]],
    connection: str,
    ctx: Context,
    key: Annotated[str | list[str] | None, AfterValidator(_keys)] = None,
    schema: Annotated[str | None, AfterValidator(_identifier)] = None,
    mode: Literal["auto", "insert", "upsert"] = "auto",
    max_rows: Annotated[int, Field(ge=1)] = 10_000,
) -> dict[str, Any]:
    """Write ``rows`` (an object or a list of objects, column → value) into ``table``.
    ``key`` (a column or columns with a unique index) makes it an upsert: insert, or
    update the row with the same key. Returns ``{"table", "rows", "mode"}``.

    Example::

        {"id": "save", "type": "database_save", "config": {
            "table": "orders", "connection": "orders_db", "key": "order_id",
            "rows": {"order_id": {"$expr": "nodes.webhook.data.body.id"}, "status": "paid"}}}
    """
    sqlalchemy = optional_import("sqlalchemy", "database", "database_save")
    batch = [rows] if isinstance(rows, dict) else list(rows)
    if not batch:
        return {"table": table, "rows": 0, "mode": "none"}
    if len(batch) > max_rows:
        raise NodeError(f"database_save: {len(batch)} rows exceed max_rows={max_rows}", retryable=False)
    keys = _keys(key)
    if mode == "upsert" and not keys:
        raise NodeError("database_save: mode 'upsert' needs key (the unique column(s))", retryable=False)
    if mode == "insert":
        keys = None
    url = ctx.credential(connection)
    if not isinstance(url, str):
        raise NodeError(f"database_save: credential {connection!r} must be a database URL", retryable=False)
    try:
        engine = _engine(url)
        target = _table(engine, url, table, schema)
        columns = {c.name: c for c in target.columns}
        names = list(batch[0])
        for i, row in enumerate(batch):
            if not isinstance(row, dict) or list(row) != names:
                raise NodeError(f"database_save: rows[{i}] has other columns than rows[0]", retryable=False)
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise NodeError(
                f"database_save: table {table!r} has no column(s) {unknown}; it has {sorted(columns)}",
                retryable=False,
            )
        missing = [k for k in keys or [] if k not in names]
        if missing:
            raise NodeError(f"database_save: key column(s) {missing} are not in the rows", retryable=False)
        values = [{n: _coerce(columns[n], row[n]) for n in names} for row in batch]
        stmt = _statement(target, values, keys, engine.dialect.name)
        with engine.begin() as conn:
            conn.execute(stmt)
    except sqlalchemy.exc.OperationalError as exc:  # connection refused or lost, deadlock: try again
        raise NodeError(f"database_save: {ctx.scrub(codec.redact_text(str(exc.orig)))}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:  # integrity, data, programming errors: permanent
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise NodeError(
            f"database_save: {type(exc).__name__}: {ctx.scrub(codec.redact_text(detail))}", retryable=False
        ) from None
    ctx.log.info(f"{'upserted' if keys else 'inserted'} {len(batch)} row(s) into {table}")
    return {"table": table, "rows": len(batch), "mode": "upsert" if keys else "insert"}
