"""The SQLite outbox: the same events as PostgreSQL, through SQLite triggers and polling.

For the user's own SQLite database file. SQLite triggers fire for one operation each, so
one trigger per watched operation writes the row (as a JSON object of the table's
columns at activation time; BLOBs as hex) into ``autoflow_outbox`` inside the writing
transaction. SQLite cannot wake a reader in another process, so the listener polls every
``poll_interval`` seconds (one indexed query).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from autoflow import codec
from autoflow.errors import BackendError, InputError
from autoflow.models import DbTriggerInfo
from autoflow.triggers.outbox import Event
from autoflow.triggers.postgres import names

__all__ = ["SQLiteSource", "sqlite_path"]

_OUTBOX = (
    "CREATE TABLE IF NOT EXISTS autoflow_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, trigger_id TEXT NOT NULL,"
    " table_name TEXT NOT NULL, op TEXT NOT NULL, old_row TEXT, new_row TEXT, truncated INTEGER NOT NULL DEFAULT 0,"
    " at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
)
_INDEX = "CREATE INDEX IF NOT EXISTS autoflow_outbox_trigger_id ON autoflow_outbox (trigger_id, id)"


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///path`` (or a plain path)."""
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else url


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SQLiteSource:
    """The outbox of one trigger in a SQLite database file.

    Example::

        source = SQLiteSource(info, "/data/shop.db")
        source.install(); source.fetch(100); source.close()
    """

    def __init__(self, info: DbTriggerInfo, url: str) -> None:
        self.info = info
        self.path = sqlite_path(url)
        self.shown = codec.redact_text(url)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise BackendError(self.shown, f"{type(exc).__name__}: {exc}") from None

    def install(self) -> None:
        info = self.info
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                columns = [r[1] for r in self.conn.execute(f"PRAGMA table_info({_q(info.table)})")]
                if not columns:
                    raise InputError(f"table {info.table!r} does not exist in {self.shown}")
                keys = [
                    r[1]
                    for r in sorted(self.conn.execute(f"PRAGMA table_info({_q(info.table)})"), key=lambda r: r[5])
                    if r[5]
                ]
                self.conn.execute(_OUTBOX)
                self.conn.execute(_INDEX)
                for op in ("INSERT", "UPDATE", "DELETE"):
                    self.conn.execute(f"DROP TRIGGER IF EXISTS {_q(self._trigger(op))}")
                for op in info.operations:
                    self.conn.execute(self._trigger_sql(op, columns, keys))
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackendError(self.shown, f"installing trigger {info.id!r}: {type(exc).__name__}: {exc}") from None

    def _trigger(self, op: str) -> str:
        return f"{names(self.info.id)['trigger']}_{op.lower()}"

    def _trigger_sql(self, op: str, columns: list[str], keys: list[str]) -> str:
        info = self.info

        def row(prefix: str, cols: list[str]) -> str:
            def value(c: str) -> str:  # BLOBs as hex: json_object() refuses them
                ref = f"{prefix}.{_q(c)}"
                return f"CASE typeof({ref}) WHEN 'blob' THEN hex({ref}) ELSE {ref} END"

            return "json_object(" + ", ".join(f"{_lit(c)}, {value(c)}" for c in cols) + ")"

        def bounded(prefix: str) -> tuple[str, str]:
            full = row(prefix, columns)
            short = row(prefix, keys) if keys else "NULL"
            limit = int(info.max_row_bytes)
            return f"CASE WHEN length({full}) > {limit} THEN {short} ELSE {full} END", f"length({full}) > {limit}"

        old, old_cut = bounded("OLD") if op != "INSERT" else ("NULL", "0")
        new, new_cut = bounded("NEW") if op != "DELETE" else ("NULL", "0")
        return (
            f"CREATE TRIGGER {_q(self._trigger(op))} AFTER {op} ON {_q(info.table)} BEGIN "
            "INSERT INTO autoflow_outbox (trigger_id, table_name, op, old_row, new_row, truncated) VALUES "
            f"({_lit(info.id)}, {_lit(info.table)}, {_lit(op)}, {old}, {new}, ({old_cut}) OR ({new_cut})); END"
        )

    def uninstall(self) -> None:
        try:
            try:
                for op in ("INSERT", "UPDATE", "DELETE"):
                    self.conn.execute(f"DROP TRIGGER IF EXISTS {_q(self._trigger(op))}")
            finally:
                if self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'autoflow_outbox'").fetchone():
                    self.conn.execute("DELETE FROM autoflow_outbox WHERE trigger_id = ?", (self.info.id,))
        except sqlite3.Error as exc:
            raise BackendError(self.shown, f"removing trigger {self.info.id!r}: {type(exc).__name__}: {exc}") from None

    def fetch(self, limit: int) -> list[Event]:
        rows = self.conn.execute(
            "SELECT id, table_name, op, old_row, new_row, truncated, at FROM autoflow_outbox"
            " WHERE trigger_id = ? ORDER BY id LIMIT ?",
            (self.info.id, limit),
        ).fetchall()
        return [
            Event(int(r[0]), r[1], r[2], codec.loads(r[3]), codec.loads(r[4]), bool(r[5]), float(r[6])) for r in rows
        ]

    def delete(self, ids: Sequence[int]) -> None:
        marks = ", ".join("?" for _ in ids)
        self.conn.execute(f"DELETE FROM autoflow_outbox WHERE trigger_id = ? AND id IN ({marks})", (self.info.id, *ids))

    def wait(self, timeout: float) -> bool:
        time.sleep(timeout)  # no cross-process wake-up in SQLite: poll
        return False

    def close(self) -> None:
        self.conn.close()
