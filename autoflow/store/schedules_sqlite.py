"""Trigger records (schedules, database triggers) in the embedded SQLite store.

One table beside the run tables, created on first use; each write is one
``BEGIN IMMEDIATE`` transaction on the run store's own connection, so it is atomic
across the processes sharing the database file.
"""

from __future__ import annotations

from autoflow.store.sqlite import SQLiteStore

__all__ = ["SQLiteTriggerStore"]

_TABLE = """CREATE TABLE IF NOT EXISTS trigger_records (
    kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, version INTEGER NOT NULL,
    wake_at REAL, PRIMARY KEY (kind, id))"""
_INDEX = "CREATE INDEX IF NOT EXISTS trigger_records_wake ON trigger_records (kind, wake_at) WHERE wake_at IS NOT NULL"


class SQLiteTriggerStore:
    """See :class:`autoflow.store.schedules.TriggerStore`.

    Example::

        records = SQLiteTriggerStore(SQLiteStore(":memory:"))
        records.put_record("schedule", "nightly", "{...}", version=None, wake_at=1.7e9)   # 1
    """

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        with store._tx() as db:
            db.execute(_TABLE)
            db.execute(_INDEX)

    def put_record(self, kind: str, id: str, body: str, *, version: int | None, wake_at: float | None) -> int | None:
        with self.store._tx() as db:
            if version is None:
                cur = db.execute(
                    "INSERT OR IGNORE INTO trigger_records VALUES (?, ?, ?, 1, ?)", (kind, id, body, wake_at)
                )
                return 1 if cur.rowcount else None
            cur = db.execute(
                "UPDATE trigger_records SET body = ?, version = version + 1, wake_at = ?"
                " WHERE kind = ? AND id = ? AND version = ?",
                (body, wake_at, kind, id, version),
            )
            return version + 1 if cur.rowcount else None

    def get_record(self, kind: str, id: str) -> tuple[str, int] | None:
        rows = self.store._read("SELECT body, version FROM trigger_records WHERE kind = ? AND id = ?", (kind, id))
        return (str(rows[0]["body"]), int(rows[0]["version"])) if rows else None

    def list_records(self, kind: str) -> list[tuple[str, int]]:
        rows = self.store._read("SELECT body, version FROM trigger_records WHERE kind = ? ORDER BY id", (kind,))
        return [(str(r["body"]), int(r["version"])) for r in rows]

    def delete_record(self, kind: str, id: str) -> bool:
        with self.store._tx() as db:
            return db.execute("DELETE FROM trigger_records WHERE kind = ? AND id = ?", (kind, id)).rowcount > 0

    def due_records(self, kind: str, now: float, limit: int) -> list[str]:
        rows = self.store._read(
            "SELECT id FROM trigger_records WHERE kind = ? AND wake_at IS NOT NULL AND wake_at <= ?"
            " ORDER BY wake_at, id LIMIT ?",
            (kind, now, limit),
        )
        return [str(r["id"]) for r in rows]

    def next_wake(self, kind: str) -> float | None:
        rows = self.store._read("SELECT MIN(wake_at) AS w FROM trigger_records WHERE kind = ?", (kind,))
        value = rows[0]["w"] if rows else None
        return None if value is None else float(value)
