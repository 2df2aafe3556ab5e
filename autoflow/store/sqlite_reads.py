"""SQLite store, the read side: schema, snapshots, history, logs and stats."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from autoflow import codec
from autoflow.models import (
    ErrorInfo,
    LogEntry,
    LogLevel,
    NodeInfo,
    NodeStatus,
    QueueCounts,
    QueueStats,
    RunInfo,
    RunStatus,
    trusted,
)
from autoflow.templates import resolve_template

__all__ = ["ID_PAGE", "MIGRATIONS", "SCHEMA", "SQLiteReads"]

#: Ids per query of a read of many runs: SQLite before 3.32 binds at most 999 parameters.
ID_PAGE = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (digest TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, digest TEXT NOT NULL, status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, inputs TEXT, output_tpl TEXT,
    user_id TEXT, organization_id TEXT, trigger TEXT, trigger_data TEXT,
    idempotency_key TEXT UNIQUE, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    remaining INTEGER NOT NULL, running INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
    first_error TEXT, parent_run TEXT, parent_node TEXT, code TEXT, signature TEXT
);
CREATE INDEX IF NOT EXISTS runs_admission ON runs (status, priority DESC, created_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_workflow_created ON runs (workflow, created_at);
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    status TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1,
    stall_count INTEGER NOT NULL DEFAULT 0, n_parents INTEGER NOT NULL,
    n_ok INTEGER NOT NULL DEFAULT 0, n_fail INTEGER NOT NULL DEFAULT 0,
    n_skip INTEGER NOT NULL DEFAULT 0, rule TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    parents TEXT NOT NULL, children TEXT NOT NULL, owner TEXT, lease_until REAL, due_at REAL,
    started_at REAL, finished_at REAL, output TEXT, error TEXT,
    when_node TEXT, when_value INTEGER, handled INTEGER NOT NULL DEFAULT 0, wake_at REAL,
    map_of TEXT, item TEXT, n_items INTEGER, next_item INTEGER, done_items INTEGER,
    max_parallel INTEGER, child_run TEXT, item_parents TEXT,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_lease ON nodes (status, lease_until);
CREATE INDEX IF NOT EXISTS nodes_due ON nodes (status, due_at);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
    level TEXT NOT NULL, message TEXT NOT NULL, node_id TEXT, data TEXT
);
CREATE INDEX IF NOT EXISTS logs_run ON logs (run_id, id);
CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, tokens REAL NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    key TEXT NOT NULL, holder TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, holder)
);
"""

#: Columns added after the first release: (name, declaration) per table.
MIGRATIONS: dict[str, list[tuple[str, str]]] = {
    "runs": [
        ("parent_run", "TEXT"),
        ("parent_node", "TEXT"),
        ("code", "TEXT"),
        ("signature", "TEXT"),
        ("workflow_id", "TEXT"),
        ("workflow_version", "INTEGER"),
    ],
    "nodes": [
        ("when_node", "TEXT"),
        ("when_value", "INTEGER"),
        ("handled", "INTEGER NOT NULL DEFAULT 0"),
        ("wake_at", "REAL"),
        ("map_of", "TEXT"),
        ("item", "TEXT"),
        ("n_items", "INTEGER"),
        ("next_item", "INTEGER"),
        ("done_items", "INTEGER"),
        ("max_parallel", "INTEGER"),
        ("child_run", "TEXT"),
        ("item_parents", "TEXT"),
    ],
}


class SQLiteReads:
    """Queries of :class:`~autoflow.store.sqlite.SQLiteStore` that change nothing."""

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    # -- reads -----------------------------------------------------------------------------
    def run_status(self, run_id: str) -> RunStatus | None:
        rows = self._read("SELECT status FROM runs WHERE id = ?", (run_id,))
        return RunStatus(rows[0][0]) if rows else None

    def run_statuses(self, run_ids: Sequence[str]) -> list[RunStatus | None]:
        found = self._run_column(run_ids, "status")
        return [RunStatus(found[run_id]) if run_id in found else None for run_id in run_ids]

    def created_at(self, run_ids: Sequence[str]) -> list[float | None]:
        found = self._run_column(run_ids, "created_at")
        return [found.get(run_id) for run_id in run_ids]

    def run_summaries(self, run_ids: Sequence[str]) -> list[RunInfo | None]:
        found = self._run_rows(run_ids, "*")
        return [_run_info(found[run_id], {}, []) if run_id in found else None for run_id in run_ids]

    def _run_column(self, run_ids: Sequence[str], column: str) -> dict[str, Any]:
        """One column of the runs that exist among ``run_ids``, by id (see :meth:`_run_rows`)."""
        return {run_id: row[1] for run_id, row in self._run_rows(run_ids, f"id, {column}").items()}

    def _run_rows(self, run_ids: Sequence[str], columns: str) -> dict[str, sqlite3.Row]:
        """``columns`` of the runs that exist among ``run_ids`` (``id`` among them), by id:
        one query per :data:`ID_PAGE` ids (SQLite's limit on bound parameters)."""
        found: dict[str, sqlite3.Row] = {}
        for first in range(0, len(run_ids), ID_PAGE):
            page = run_ids[first : first + ID_PAGE]
            marks = ",".join("?" * len(page))
            rows = self._read(f"SELECT {columns} FROM runs WHERE id IN ({marks})", page)
            found.update((row["id"], row) for row in rows)
        return found

    def run_parent(self, run_id: str) -> tuple[str, str] | None:
        rows = self._read("SELECT parent_run, parent_node FROM runs WHERE id = ?", (run_id,))
        return (rows[0][0], rows[0][1]) if rows and rows[0][0] else None

    def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return None
        nodes = self._read(
            "SELECT node_id, type, status, attempt, stall_count, started_at, finished_at, output, error,"
            " handled, n_items, done_items, child_run FROM nodes WHERE run_id = ? AND map_of IS NULL ORDER BY seq",
            (run_id,),
        )
        infos = {
            n["node_id"]: trusted(  # written by the engine: no validation (hot path)
                NodeInfo,
                id=n["node_id"],
                type=n["type"],
                status=NodeStatus(n["status"]),
                attempt=n["attempt"],
                stall_count=n["stall_count"],
                started_at=codec.from_ts(n["started_at"]),
                finished_at=codec.from_ts(n["finished_at"]),
                output=codec.loads(n["output"]),
                error=ErrorInfo.model_validate_json(n["error"]) if n["error"] else None,
                items_total=n["n_items"],
                items_done=n["done_items"] or 0,
                child_run_id=n["child_run"],
            )
            for n in nodes
        }
        unhandled = [n["node_id"] for n in nodes if n["status"] == "failed" and not n["handled"]]
        return _run_info(rows[0], infos, unhandled)

    def list_runs(self, workflow: str | None, status: RunStatus | None, limit: int) -> list[RunInfo]:
        where, args = [], []
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if status:
            where.append("status = ?")
            args.append(RunStatus(status).value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT * FROM runs {clause} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit))
        return [_run_info(r, {}, []) for r in rows]

    def get_logs(self, run_id: str, since: int = 0, node_id: str | None = None, limit: int = 10_000) -> list[LogEntry]:
        sql = "SELECT * FROM logs WHERE run_id = ? AND id > ?"
        args: list[Any] = [run_id, since]
        if node_id:
            sql += " AND node_id = ?"
            args.append(node_id)
        rows = self._read(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [
            LogEntry(
                id=r["id"],
                timestamp=codec.from_ts(r["ts"]),
                level=LogLevel(r["level"]),
                message=r["message"],
                node_id=r["node_id"],
                data=codec.loads(r["data"]),
            )
            for r in rows
        ]

    def stats(self) -> QueueStats:
        # A run paused before it was admitted holds no slot: counted apart (the status
        # index answers both parts; paused runs are few).
        runs = {
            r[0]: r[1]
            for r in self._read(
                "SELECT status, COUNT(*) FROM runs GROUP BY status UNION ALL"
                " SELECT 'paused before admission', COUNT(*) FROM runs WHERE status = 'paused' AND started_at IS NULL"
            )
        }
        nodes = {r[0]: r[1] for r in self._read("SELECT status, COUNT(*) FROM nodes GROUP BY status")}
        return QueueStats(
            workflow=QueueCounts(
                waiting=runs.get("pending", 0),
                active=runs.get("running", 0) + runs.get("paused", 0) - runs.get("paused before admission", 0),
                completed=runs.get("completed", 0),
                failed=runs.get("failed", 0),
            ),
            node=QueueCounts(
                waiting=nodes.get("queued", 0) + nodes.get("retrying", 0),
                active=nodes.get("running", 0),
                completed=nodes.get("completed", 0),
                failed=nodes.get("failed", 0),
            ),
        )


def _run_info(row: sqlite3.Row, nodes: dict[str, NodeInfo], unhandled: list[str]) -> RunInfo:
    status = RunStatus(row["status"])
    error = first_error(nodes, unhandled) if status is RunStatus.FAILED else None
    output = None
    if status is RunStatus.COMPLETED and nodes:
        output = resolve_template(
            codec.loads(row["output_tpl"]),
            {k: n.output for k, n in nodes.items()},
            codec.loads(row["inputs"]) or {},
        )
    return RunInfo(
        id=row["id"],
        workflow=row["workflow"],
        definition_hash=row["digest"],
        status=status,
        priority=row["priority"],
        inputs=codec.loads(row["inputs"]) or {},
        output=output,
        error=error,
        user_id=row["user_id"],
        organization_id=row["organization_id"],
        trigger=row["trigger"] or "manual",
        trigger_data=codec.loads(row["trigger_data"]),
        created_at=codec.from_ts(row["created_at"]),
        started_at=codec.from_ts(row["started_at"]),
        finished_at=codec.from_ts(row["finished_at"]),
        cancel_requested=bool(row["cancel_requested"]),
        parent_run_id=row["parent_run"],
        parent_node_id=row["parent_node"],
        workflow_id=row["workflow_id"],
        workflow_version=row["workflow_version"],
        nodes=nodes,
    )


def first_error(nodes: dict[str, NodeInfo], unhandled: list[str]) -> ErrorInfo | None:
    """The error of the earliest failure no error handler took care of."""
    failed = sorted((n for n in unhandled if n in nodes), key=lambda n: nodes[n].finished_at or datetime.max)
    return nodes[failed[0]].error if failed else None
