"""SQLite store, the catalog: workflows by id with versions, and run queries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from autoflow import codec
from autoflow.models import RunInfo
from autoflow.store.catalog import ANY_VERSION, RunQuery, StoredWorkflow
from autoflow.store.sqlite_reads import _run_info

__all__ = ["CATALOG_SCHEMA", "SQLiteCatalog"]

#: Run after the runs table got its catalog columns (see ``MIGRATIONS``).
CATALOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    org TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
    body TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (org, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_org ON runs (organization_id, id);
CREATE INDEX IF NOT EXISTS runs_workflow_id ON runs (workflow_id, id);
"""


class SQLiteCatalog:
    """The :class:`~autoflow.store.catalog.Catalog` of :class:`~autoflow.store.sqlite.SQLiteStore`."""

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def save_workflow(
        self,
        organization_id: str | None,
        workflow_id: str,
        name: str,
        body: str,
        *,
        expected_version: int = ANY_VERSION,
    ) -> int | None:
        org = organization_id or ""
        with self._tx() as db:
            latest = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM workflows WHERE org = ? AND id = ?", (org, workflow_id)
            ).fetchone()[0]
            if expected_version != ANY_VERSION and latest != expected_version:
                return None
            db.execute(
                "INSERT INTO workflows VALUES (?, ?, ?, ?, ?, ?)",
                (org, workflow_id, latest + 1, name, body, time.time()),
            )
        return int(latest) + 1

    def get_workflow(
        self, organization_id: str | None, workflow_id: str, version: int | None = None
    ) -> StoredWorkflow | None:
        sql = "SELECT * FROM workflows WHERE org = ? AND id = ?"
        args: list[Any] = [organization_id or "", workflow_id]
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        rows = self._read(sql + " ORDER BY version DESC LIMIT 1", args)
        return _stored(rows[0]) if rows else None

    def list_workflows(self, organization_id: str | None, limit: int = 100) -> list[StoredWorkflow]:
        rows = self._read(
            "SELECT w.* FROM workflows w JOIN (SELECT id, MAX(version) AS v FROM workflows WHERE org = ?"
            " GROUP BY id) latest ON w.id = latest.id AND w.version = latest.v WHERE w.org = ?"
            " ORDER BY w.id LIMIT ?",
            (organization_id or "", organization_id or "", limit),
        )
        return [_stored(r) for r in rows]

    def query_runs(self, query: RunQuery) -> list[RunInfo]:
        where, args = list(_filters(query)), []
        clause = " AND ".join(w for w, _ in where)
        args = [a for _, a in where]
        sql = f"SELECT * FROM runs {'WHERE ' + clause if clause else ''} ORDER BY id DESC LIMIT ?"
        return [_run_info(r, {}, []) for r in self._read(sql, (*args, max(0, query.limit)))]


def _filters(query: RunQuery) -> Iterator[tuple[str, Any]]:
    for column, value in (
        ("workflow", query.workflow),
        ("status", query.status.value if query.status else None),
        ("organization_id", query.organization_id),
        ("user_id", query.user_id),
        ("trigger", query.trigger),
        ("workflow_id", query.workflow_id),
    ):
        if value is not None:
            yield f"{column} = ?", value
    if query.before is not None:
        yield "id < ?", query.before


def _stored(row: sqlite3.Row) -> StoredWorkflow:
    return StoredWorkflow(
        id=row["id"],
        version=row["version"],
        organization_id=row["org"] or None,
        name=row["name"],
        definition=codec.loads(row["body"]),
        created_at=row["created_at"],
    )
