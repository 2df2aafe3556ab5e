"""SQLite store: the embedded default (WAL, safe for several processes on one machine).

Every transition is one ``BEGIN IMMEDIATE`` transaction. Within a process, one
connection per store serialises access (as SQLite would anyway); other processes use
their own connection and wait on the busy timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoflow import codec
from autoflow.engine.planner import Decision, decide, final_status, message_priority
from autoflow.errors import BackendError
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
)
from autoflow.store.base import Claim, HeartbeatResult, NewRun, NodeSeed, Progress, Ready, crash_error
from autoflow.workflow import resolve_template

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (digest TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, digest TEXT NOT NULL, status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, inputs TEXT, output_tpl TEXT,
    user_id TEXT, organization_id TEXT, trigger TEXT, trigger_data TEXT,
    idempotency_key TEXT UNIQUE, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    remaining INTEGER NOT NULL, running INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
    first_error TEXT
);
CREATE INDEX IF NOT EXISTS runs_queue ON runs (status, priority DESC, id);
CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, id);
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    status TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1,
    stall_count INTEGER NOT NULL DEFAULT 0, n_parents INTEGER NOT NULL,
    n_ok INTEGER NOT NULL DEFAULT 0, n_fail INTEGER NOT NULL DEFAULT 0,
    n_skip INTEGER NOT NULL DEFAULT 0, rule TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    parents TEXT NOT NULL, children TEXT NOT NULL, owner TEXT, lease_until REAL, due_at REAL,
    started_at REAL, finished_at REAL, output TEXT, error TEXT,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_lease ON nodes (status, lease_until);
CREATE INDEX IF NOT EXISTS nodes_due ON nodes (status, due_at);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
    level TEXT NOT NULL, message TEXT NOT NULL, node_id TEXT, data TEXT
);
CREATE INDEX IF NOT EXISTS logs_run ON logs (run_id, id);
"""
_OUTCOME_COLUMN = {"ok": "n_ok", "fail": "n_fail", "skip": "n_skip"}
_ACTIVE = ("running", "paused")


class SQLiteStore:
    """The embedded store. ``SQLiteStore(":memory:")`` for tests, a file path otherwise.

    Example::

        store = SQLiteStore(Path.home() / ".autoflow" / "autoflow.db")
    """

    def __init__(self, path: str | Path = ":memory:", *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._finished = threading.Condition()
        self._open()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    # -- connection ------------------------------------------------------------------------
    def _open(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(self.url, str(exc)) from None
        self._conn = conn

    def _after_fork(self) -> None:
        if self.path != ":memory:" and getattr(self, "_pid", None) != os.getpid():
            self._open()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise BackendError(self.url, str(exc)) from None
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise BackendError(self.url, str(exc)) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- definitions and runs --------------------------------------------------------------
    def put_definition(self, digest: str, body: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO definitions VALUES (?, ?)", (digest, body))

    def get_definition(self, digest: str) -> str | None:
        rows = self._read("SELECT body FROM definitions WHERE digest = ?", (digest,))
        return rows[0]["body"] if rows else None

    def create_run(self, run: NewRun, nodes: Sequence[NodeSeed]) -> str:
        with self._tx() as db:
            if run.idempotency_key:
                row = db.execute(
                    "SELECT id FROM runs WHERE idempotency_key = ?", (run.idempotency_key,)
                ).fetchone()
                if row:
                    return str(row["id"])
            db.execute(
                "INSERT INTO runs (id, workflow, digest, status, priority, inputs, output_tpl, user_id,"
                " organization_id, trigger, trigger_data, idempotency_key, created_at, remaining)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.workflow,
                    run.digest,
                    run.priority,
                    codec.dumps(run.inputs),
                    codec.dumps(run.output),
                    run.user_id,
                    run.organization_id,
                    run.trigger,
                    codec.dumps(run.trigger_data),
                    run.idempotency_key,
                    run.created_at,
                    len(nodes),
                ),
            )
            db.executemany(
                "INSERT INTO nodes (run_id, node_id, seq, type, status, n_parents, rule, priority,"
                " parents, children) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                [
                    (
                        run.id,
                        n.id,
                        i,
                        n.type,
                        len(n.parents),
                        n.rule,
                        n.priority,
                        codec.dumps(list(n.parents)),
                        codec.dumps(list(n.children)),
                    )
                    for i, n in enumerate(nodes)
                ],
            )
        return run.id

    def admit(self, limit: int) -> list[Ready]:
        now = time.time()
        ready: list[Ready] = []
        with self._tx() as db:
            active = db.execute(
                "SELECT COUNT(*) FROM runs WHERE status = 'running'"
                " OR (status = 'paused' AND started_at IS NOT NULL)"
            ).fetchone()[0]
            free = limit - active
            if free <= 0:
                return []
            rows = db.execute(
                "SELECT id, priority FROM runs WHERE status = 'pending' ORDER BY priority DESC, id LIMIT ?",
                (free,),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE runs SET status = 'running', started_at = ? WHERE id = ?", (now, row["id"])
                )
                roots = db.execute(
                    "SELECT node_id, priority FROM nodes WHERE run_id = ? AND status = 'pending'"
                    " AND n_parents = 0",
                    (row["id"],),
                ).fetchall()
                db.execute(
                    "UPDATE nodes SET status = 'queued', due_at = ? WHERE run_id = ?"
                    " AND status = 'pending' AND n_parents = 0",
                    (now, row["id"]),
                )
                ready += [
                    Ready(row["id"], r["node_id"], 1, message_priority(row["priority"], r["priority"]))
                    for r in roots
                ]
                self._log(db, row["id"], [_engine_log(LogLevel.INFO, "run started", now=now)])
        return ready

    # -- node transitions ------------------------------------------------------------------
    def claim(self, run_id: str, node_id: str, attempt: int, token: str, lease: float) -> Claim | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT n.status, n.attempt, n.parents, r.status AS run_status, r.cancel_requested,"
                " r.workflow, r.digest, r.inputs FROM nodes n JOIN runs r ON r.id = n.run_id"
                " WHERE n.run_id = ? AND n.node_id = ?",
                (run_id, node_id),
            ).fetchone()
            if (
                row is None
                or row["status"] not in ("queued", "retrying")
                or row["attempt"] != attempt
                or row["run_status"] != "running"
                or row["cancel_requested"]
            ):
                return None
            db.execute(
                "UPDATE nodes SET status = 'running', owner = ?, lease_until = ?, started_at = ?,"
                " finished_at = NULL, due_at = NULL WHERE run_id = ? AND node_id = ?",
                (token, now + lease, now, run_id, node_id),
            )
            db.execute("UPDATE runs SET running = running + 1 WHERE id = ?", (run_id,))
            parents = json.loads(row["parents"])
            outputs = {}
            if parents:
                marks = ",".join("?" * len(parents))
                for r in db.execute(
                    f"SELECT node_id, output FROM nodes WHERE run_id = ? AND node_id IN ({marks})",
                    (run_id, *parents),
                ):
                    outputs[r["node_id"]] = codec.loads(r["output"])
            self._log(db, run_id, [_engine_log(LogLevel.INFO, f"started (attempt {attempt})", node_id, now)])
        return Claim(
            run_id, node_id, attempt, row["workflow"], row["digest"], codec.loads(row["inputs"]), outputs
        )

    def _fenced(self, db: sqlite3.Connection, run_id: str, node_id: str, token: str) -> sqlite3.Row | None:
        row = db.execute(
            "SELECT n.status, n.owner, n.attempt, n.priority AS node_priority, r.priority"
            " FROM nodes n JOIN runs r ON r.id = n.run_id WHERE n.run_id = ? AND n.node_id = ?",
            (run_id, node_id),
        ).fetchone()
        if row is None or row["status"] != "running" or row["owner"] != token:
            return None
        return row  # type: ignore[no-any-return]

    def complete(
        self, run_id: str, node_id: str, token: str, output: Any, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        now = time.time()
        with self._tx() as db:
            row = self._fenced(db, run_id, node_id, token)
            if row is None:
                return Progress(False)
            db.execute(
                "UPDATE nodes SET status = 'completed', output = ?, error = NULL, finished_at = ?,"
                " owner = NULL, lease_until = NULL WHERE run_id = ? AND node_id = ?",
                (codec.dumps(output), now, run_id, node_id),
            )
            db.execute(
                "UPDATE runs SET running = running - 1, remaining = remaining - 1 WHERE id = ?", (run_id,)
            )
            self._log(db, run_id, logs)
            ready = self._settle(db, run_id, row["priority"], node_id, "ok", now)
            finished = self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, ready, finished))

    def fail(
        self,
        run_id: str,
        node_id: str,
        token: str,
        error: ErrorInfo,
        retry_at: float | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        now = time.time()
        with self._tx() as db:
            row = self._fenced(db, run_id, node_id, token)
            if row is None:
                return Progress(False)
            self._log(db, run_id, logs)
            cancelled = db.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            if retry_at is not None and not cancelled:
                attempt = row["attempt"] + 1
                db.execute(
                    "UPDATE nodes SET status = 'retrying', attempt = ?, error = ?, due_at = ?,"
                    " owner = NULL, lease_until = NULL, finished_at = ? WHERE run_id = ? AND node_id = ?",
                    (attempt, error.model_dump_json(), retry_at, now, run_id, node_id),
                )
                db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
                prio = message_priority(row["priority"], row["node_priority"])
                return Progress(True, [Ready(run_id, node_id, attempt, prio, retry_at)])
            if cancelled:
                self._cancel_node(db, run_id, node_id, now)
                ready: list[Ready] = []
            else:
                ready = self._fail_node(db, run_id, row["priority"], node_id, error, now, running=True)
            finished = self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, ready, finished))

    def cancel_node(self, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]) -> Progress:
        now = time.time()
        with self._tx() as db:
            if self._fenced(db, run_id, node_id, token) is None:
                return Progress(False)
            self._log(db, run_id, logs)
            self._cancel_node(db, run_id, node_id, now)
            finished = self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, [], finished))

    @staticmethod
    def _cancel_node(db: sqlite3.Connection, run_id: str, node_id: str, now: float) -> None:
        db.execute(
            "UPDATE nodes SET status = 'cancelled', finished_at = ?, owner = NULL,"
            " lease_until = NULL WHERE run_id = ? AND node_id = ?",
            (now, run_id, node_id),
        )
        db.execute("UPDATE runs SET running = running - 1, remaining = remaining - 1 WHERE id = ?", (run_id,))

    def _fail_node(
        self,
        db: sqlite3.Connection,
        run_id: str,
        run_priority: int,
        node_id: str,
        error: ErrorInfo,
        now: float,
        *,
        running: bool,
    ) -> list[Ready]:
        db.execute(
            "UPDATE nodes SET status = 'failed', error = ?, finished_at = ?, owner = NULL,"
            " lease_until = NULL WHERE run_id = ? AND node_id = ?",
            (error.model_dump_json(), now, run_id, node_id),
        )
        db.execute(
            "UPDATE runs SET running = running - ?, remaining = remaining - 1, failed = failed + 1,"
            " first_error = COALESCE(first_error, ?) WHERE id = ?",
            (1 if running else 0, node_id, run_id),
        )
        return self._settle(db, run_id, run_priority, node_id, "fail", now)

    def _settle(
        self, db: sqlite3.Connection, run_id: str, run_priority: int, node_id: str, outcome: str, now: float
    ) -> list[Ready]:
        """Tell the children of a finished node its outcome; cascade skips. O(out-degree)
        per finished node."""
        ready: list[Ready] = []
        stack = [(node_id, outcome)]
        while stack:
            parent, result = stack.pop()
            children = json.loads(
                db.execute(
                    "SELECT children FROM nodes WHERE run_id = ? AND node_id = ?", (run_id, parent)
                ).fetchone()[0]
            )
            column = _OUTCOME_COLUMN[result]
            for child in children:
                row = db.execute(
                    f"UPDATE nodes SET {column} = {column} + 1 WHERE run_id = ? AND node_id = ?"
                    " AND status = 'pending'"
                    " RETURNING n_parents, n_ok, n_fail, n_skip, rule, priority",
                    (run_id, child),
                ).fetchone()
                if row is None:
                    continue
                decision = decide(row["rule"], row["n_parents"], row["n_ok"], row["n_fail"], row["n_skip"])
                if decision is Decision.READY:
                    db.execute(
                        "UPDATE nodes SET status = 'queued', due_at = ? WHERE run_id = ? AND node_id = ?",
                        (now, run_id, child),
                    )
                    ready.append(Ready(run_id, child, 1, message_priority(run_priority, row["priority"])))
                elif decision is Decision.SKIP:
                    db.execute(
                        "UPDATE nodes SET status = 'skipped', finished_at = ?"
                        " WHERE run_id = ? AND node_id = ?",
                        (now, run_id, child),
                    )
                    db.execute("UPDATE runs SET remaining = remaining - 1 WHERE id = ?", (run_id,))
                    stack.append((child, "skip"))
        return ready

    def _maybe_finish(self, db: sqlite3.Connection, run_id: str, now: float) -> RunStatus | None:
        row = db.execute(
            "SELECT status, remaining, running, failed, cancel_requested FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None or row["status"] not in ("pending", *_ACTIVE):
            return None
        if row["remaining"] > 0 or row["running"] > 0:
            return None
        status = final_status(bool(row["cancel_requested"]), row["failed"])
        db.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status.value, now, run_id))
        level = LogLevel.INFO if status is RunStatus.COMPLETED else LogLevel.ERROR
        self._log(db, run_id, [_engine_log(level, f"run {status.value}", now=now)])
        return status

    def _done(self, progress: Progress) -> Progress:
        if progress.finished is not None:
            with self._finished:
                self._finished.notify_all()
        return progress

    # -- leases, logs, control -------------------------------------------------------------
    def heartbeat(self, claims: Sequence[tuple[str, str, str]], lease: float) -> HeartbeatResult:
        if not claims:
            return HeartbeatResult()
        until = time.time() + lease
        cancelled: set[str] = set()
        lost: set[tuple[str, str]] = set()
        with self._tx() as db:
            for run_id, node_id, token in claims:
                changed = db.execute(
                    "UPDATE nodes SET lease_until = ? WHERE run_id = ? AND node_id = ? AND owner = ?"
                    " AND status = 'running'",
                    (until, run_id, node_id, token),
                ).rowcount
                if not changed:
                    lost.add((run_id, node_id))
            runs = {c[0] for c in claims}
            marks = ",".join("?" * len(runs))
            for row in db.execute(
                f"SELECT id FROM runs WHERE cancel_requested = 1 AND id IN ({marks})", tuple(runs)
            ):
                cancelled.add(row["id"])
        return HeartbeatResult(frozenset(cancelled), frozenset(lost))

    def append_logs(self, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        if logs:
            with self._tx() as db:
                self._log(db, run_id, logs)

    @staticmethod
    def _log(db: sqlite3.Connection, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        if logs:
            db.executemany(
                "INSERT INTO logs (run_id, ts, level, message, node_id, data) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        r["ts"],
                        r["level"],
                        r["message"],
                        r.get("node_id"),
                        codec.dumps(r["data"]) if r.get("data") else None,
                    )
                    for r in logs
                ],
            )

    def cancel_run(self, run_id: str) -> RunStatus | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if RunStatus(row["status"]).finished:
                return RunStatus(row["status"])
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            changed = db.execute(
                "UPDATE nodes SET status = 'cancelled', finished_at = ?, due_at = NULL WHERE run_id = ?"
                " AND status IN ('pending', 'queued', 'retrying')",
                (now, run_id),
            ).rowcount
            db.execute("UPDATE runs SET remaining = remaining - ? WHERE id = ?", (changed, run_id))
            self._log(db, run_id, [_engine_log(LogLevel.WARN, "cancellation requested", now=now)])
            finished = self._maybe_finish(db, run_id, now)
            status = finished or RunStatus(row["status"])
        self._done(Progress(True, [], finished))
        return status

    def pause_run(self, run_id: str) -> RunStatus | None:
        with self._tx() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if row["status"] in ("pending", "running"):
                db.execute("UPDATE runs SET status = 'paused' WHERE id = ?", (run_id,))
                self._log(db, run_id, [_engine_log(LogLevel.INFO, "run paused")])
                return RunStatus.PAUSED
            return RunStatus(row["status"])

    def resume_run(self, run_id: str) -> list[Ready]:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT status, started_at, priority FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None or row["status"] != "paused":
                return []
            status = "running" if row["started_at"] is not None else "pending"
            db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
            self._log(db, run_id, [_engine_log(LogLevel.INFO, "run resumed")])
            rows = db.execute(
                "SELECT node_id, attempt, priority, due_at FROM nodes WHERE run_id = ?"
                " AND status IN ('queued', 'retrying')",
                (run_id,),
            ).fetchall()
            db.execute(
                "UPDATE nodes SET due_at = MAX(COALESCE(due_at, 0), ?) WHERE run_id = ?"
                " AND status IN ('queued', 'retrying')",
                (now, run_id),
            )
        return [
            Ready(
                run_id,
                r["node_id"],
                r["attempt"],
                message_priority(row["priority"], r["priority"]),
                r["due_at"] if r["due_at"] and r["due_at"] > now else None,
            )
            for r in rows
        ]

    # -- reads -----------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return None
        nodes = self._read(
            "SELECT node_id, type, status, attempt, stall_count, started_at, finished_at, output, error"
            " FROM nodes WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        infos = {
            n["node_id"]: NodeInfo(
                id=n["node_id"],
                type=n["type"],
                status=NodeStatus(n["status"]),
                attempt=n["attempt"],
                stall_count=n["stall_count"],
                started_at=codec.from_ts(n["started_at"]),
                finished_at=codec.from_ts(n["finished_at"]),
                output=codec.loads(n["output"]),
                error=ErrorInfo.model_validate_json(n["error"]) if n["error"] else None,
            )
            for n in nodes
        }
        return _run_info(rows[0], infos)

    def list_runs(self, workflow: str | None, status: RunStatus | None, limit: int) -> list[RunInfo]:
        where, args = [], []
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if status:
            where.append("status = ?")
            args.append(RunStatus(status).value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT * FROM runs {clause} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_run_info(r, {}) for r in rows]

    def get_logs(
        self, run_id: str, since: int = 0, node_id: str | None = None, limit: int = 10_000
    ) -> list[LogEntry]:
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
        runs = {r[0]: r[1] for r in self._read("SELECT status, COUNT(*) FROM runs GROUP BY status")}
        nodes = {r[0]: r[1] for r in self._read("SELECT status, COUNT(*) FROM nodes GROUP BY status")}
        return QueueStats(
            workflow=QueueCounts(
                waiting=runs.get("pending", 0),
                active=runs.get("running", 0) + runs.get("paused", 0),
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

    # -- recovery --------------------------------------------------------------------------
    def reap(self, now: float, requeue_after: float, max_stalls: int) -> list[Ready]:
        ready: list[Ready] = []
        finished: RunStatus | None = None
        with self._tx() as db:
            expired = db.execute(
                "SELECT n.run_id, n.node_id, n.attempt, n.stall_count, n.priority AS node_priority,"
                " r.priority, r.cancel_requested FROM nodes n JOIN runs r ON r.id = n.run_id"
                " WHERE n.status = 'running' AND n.lease_until < ?",
                (now,),
            ).fetchall()
            for row in expired:
                run_id, node_id = row["run_id"], row["node_id"]
                stalls = row["stall_count"] + 1
                if row["cancel_requested"]:
                    self._cancel_node(db, run_id, node_id, now)
                elif stalls > max_stalls:
                    db.execute(
                        "UPDATE nodes SET stall_count = ? WHERE run_id = ? AND node_id = ?",
                        (stalls, run_id, node_id),
                    )
                    self._log(
                        db,
                        run_id,
                        [
                            _engine_log(
                                LogLevel.ERROR,
                                f"worker lost {stalls} time(s); node failed as crashed",
                                node_id,
                                now,
                            )
                        ],
                    )
                    ready += self._fail_node(
                        db, run_id, row["priority"], node_id, crash_error(node_id, stalls), now, running=True
                    )
                else:
                    db.execute(
                        "UPDATE nodes SET status = 'queued', owner = NULL, lease_until = NULL,"
                        " stall_count = ?, due_at = ? WHERE run_id = ? AND node_id = ?",
                        (stalls, now, run_id, node_id),
                    )
                    db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
                    self._log(
                        db,
                        run_id,
                        [
                            _engine_log(
                                LogLevel.WARN,
                                f"worker lost (lease expired); re-queued (stall {stalls})",
                                node_id,
                                now,
                            )
                        ],
                    )
                    prio = message_priority(row["priority"], row["node_priority"])
                    ready.append(Ready(run_id, node_id, row["attempt"], prio))
                finished = self._maybe_finish(db, run_id, now) or finished
            stale = db.execute(
                "SELECT n.run_id, n.node_id, n.attempt, n.priority AS node_priority, r.priority"
                " FROM nodes n JOIN runs r ON r.id = n.run_id WHERE n.status IN ('queued', 'retrying')"
                " AND n.due_at < ? AND r.status = 'running' AND r.cancel_requested = 0",
                (now - requeue_after,),
            ).fetchall()
            for row in stale:
                db.execute(
                    "UPDATE nodes SET due_at = ? WHERE run_id = ? AND node_id = ?",
                    (now, row["run_id"], row["node_id"]),
                )
                prio = message_priority(row["priority"], row["node_priority"])
                ready.append(Ready(row["run_id"], row["node_id"], row["attempt"], prio))
        self._done(Progress(True, [], finished))
        return ready

    def purge(self, now: float, retention: float) -> int:
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?",
                    (now - retention,),
                )
            ]
            for run_id in ids:
                for table, column in (("logs", "run_id"), ("nodes", "run_id"), ("runs", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        return len(ids)

    def wait_finished(self, run_id: str, timeout: float) -> None:
        # In-process finishes notify at once; other processes are noticed by polling.
        with self._finished:
            self._finished.wait(min(timeout, 0.05))


def _engine_log(
    level: LogLevel, message: str, node_id: str | None = None, now: float | None = None
) -> dict[str, Any]:
    return {"ts": now or time.time(), "level": level.value, "message": message, "node_id": node_id}


def _run_info(row: sqlite3.Row, nodes: dict[str, NodeInfo]) -> RunInfo:
    status = RunStatus(row["status"])
    error = None
    if row["first_error"] and row["first_error"] in nodes:
        error = nodes[row["first_error"]].error
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
        nodes=nodes,
    )
