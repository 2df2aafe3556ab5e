"""SQLite store: the embedded default (WAL, safe for several processes on one machine).

Every transition is one ``BEGIN IMMEDIATE`` transaction. Within a process, one
connection per store serialises access (as SQLite would anyway); other processes use
their own connection and wait on the busy timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoflow import codec
from autoflow.errors import BackendError
from autoflow.models import (
    LogLevel,
)
from autoflow.store.base import HeartbeatResult, NewRun, NodeSeed, QueueCommands, Ready, check_tokens, engine_log
from autoflow.store.catalog_sqlite import CATALOG_SCHEMA, SQLiteCatalog
from autoflow.store.rules import message_priority
from autoflow.store.sqlite_control import SQLiteControl
from autoflow.store.sqlite_reads import MIGRATIONS, SCHEMA

__all__ = ["SQLiteStore"]

#: Runs created per transaction by :meth:`SQLiteStore.create_many_and_admit`.
_BATCH = 500


class SQLiteStore(SQLiteCatalog, SQLiteControl):
    """The embedded store. ``SQLiteStore(":memory:")`` for tests, a file path otherwise.

    Example::

        store = SQLiteStore(Path.home() / ".autoflow" / "autoflow.db")
    """

    finish_wakes_waiters = False  # a finish in another process is noticed by polling

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
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA cache_size=-32000")  # 32 MB: big runs stay in memory
            conn.executescript(SCHEMA)
            self._migrate(conn)
            conn.executescript(CATALOG_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(self.url, str(exc)) from None
        self._conn = conn

    def _after_fork(self) -> None:
        if self.path != ":memory:" and getattr(self, "_pid", None) != os.getpid():
            self._open()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Add columns that newer versions need to a database made by an older one."""
        for table, columns in MIGRATIONS.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

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
                conn.commit()
            except sqlite3.Error as exc:  # disk full, I/O error, locked too long: the store's fault
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
                raise BackendError(self.url, f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
                raise

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

    def put_blob(self, key: str, data: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", (key, data))

    def get_blob(self, key: str) -> bytes | None:
        rows = self._read("SELECT data FROM blobs WHERE key = ?", (key,))
        return bytes(rows[0]["data"]) if rows else None

    def create_run(self, run: NewRun, nodes: Sequence[NodeSeed]) -> str:
        with self._tx() as db:
            return self._insert_run(db, run, nodes)

    def create_and_admit(
        self, run: NewRun, nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[str, list[Ready]]:
        """:meth:`create_run` then :meth:`admit`, in one transaction (a client's execute);
        the messages go through the dispatcher (``enqueue`` is for Redis queues)."""
        with self._tx() as db:
            run_id = self._insert_run(db, run, nodes)
            return run_id, self._admit(db, limit)

    def create_many_and_admit(
        self, runs: Sequence[NewRun], nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[list[str], list[Ready]]:
        """:meth:`create_and_admit` for many runs of one definition: one transaction per
        batch of ``_BATCH`` runs (workers get the database between them)."""
        ids: list[str] = []
        ready: list[Ready] = []
        for first in range(0, len(runs), _BATCH):
            with self._tx() as db:
                ids += [self._insert_run(db, run, nodes) for run in runs[first : first + _BATCH]]
                ready += self._admit(db, limit)
        return ids, ready

    def _insert_run(self, db: sqlite3.Connection, run: NewRun, nodes: Sequence[NodeSeed]) -> str:
        if run.idempotency_key:  # one key names one run: its id comes from the key
            run = dataclasses.replace(run, id=codec.keyed_run_id(run.idempotency_key))
            row = db.execute("SELECT id FROM runs WHERE idempotency_key = ?", (run.idempotency_key,)).fetchone()
            if row:
                return str(row["id"])
        db.execute(
            "INSERT INTO runs (id, workflow, digest, status, priority, inputs, output_tpl, user_id,"
            " organization_id, trigger, trigger_data, idempotency_key, created_at, remaining,"
            " parent_run, parent_node, code, signature, workflow_id, workflow_version)"
            " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                run.parent_run_id,
                run.parent_node_id,
                run.code,
                run.signature,
                run.workflow_id,
                run.workflow_version,
            ),
        )
        db.executemany(
            "INSERT INTO nodes (run_id, node_id, seq, type, status, n_parents, rule, priority,"
            " parents, children, when_node, when_value, item_parents)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    n.when[0] if n.when else None,
                    n.when[1] if n.when else None,
                    None if n.item_parents is None else codec.dumps(list(n.item_parents)),
                )
                for i, n in enumerate(nodes)
            ],
        )
        return run.id

    def admit(self, limit: int) -> list[Ready]:
        with self._tx() as db:
            return self._admit(db, limit)

    def _admit(self, db: sqlite3.Connection, limit: int) -> list[Ready]:
        now = time.time()
        ready: list[Ready] = []
        # Sub-workflow runs ride on their parent's slot: started whatever the limit (a
        # parent waiting for a child that waits for the parent's slot would deadlock).
        for child in db.execute(
            "SELECT id, priority FROM runs WHERE status = 'pending' AND parent_run IS NOT NULL LIMIT 100"
        ).fetchall():
            ready += self._start(db, child["id"], child["priority"], now)
        active = db.execute(
            "SELECT COUNT(*) FROM runs WHERE (status = 'running' OR (status = 'paused' AND started_at IS NOT NULL))"
            " AND parent_run IS NULL"
        ).fetchone()[0]
        free = limit - active
        if free <= 0:
            return ready
        rows = db.execute(
            "SELECT id, priority FROM runs WHERE status = 'pending' AND parent_run IS NULL"
            " ORDER BY priority DESC, created_at, id LIMIT ?",
            (free,),
        ).fetchall()
        for row in rows:
            ready += self._start(db, row["id"], row["priority"], now)
        return ready

    def start_run(self, run_id: str) -> list[Ready]:
        """Start one pending run now, whatever the concurrency (sub-workflow runs: their
        parent already holds a slot)."""
        with self._tx() as db:
            row = db.execute("SELECT status, priority FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row["status"] != "pending":
                return []
            return self._start(db, run_id, row["priority"], time.time())

    def _start(self, db: sqlite3.Connection, run_id: str, priority: int, now: float) -> list[Ready]:
        db.execute("UPDATE runs SET status = 'running', started_at = ? WHERE id = ?", (now, run_id))
        roots = db.execute(
            "UPDATE nodes SET status = 'queued', due_at = ? WHERE run_id = ? AND status = 'pending'"
            " AND n_parents = 0 RETURNING node_id, priority",
            (now, run_id),
        ).fetchall()
        self._log(db, run_id, [engine_log(LogLevel.INFO, "run started", now=now)])
        return [Ready(run_id, r["node_id"], 1, message_priority(priority, r["priority"])) for r in roots]

    # -- leases and logs --------------------------------------------------------------------
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
            for row in db.execute(f"SELECT id FROM runs WHERE cancel_requested = 1 AND id IN ({marks})", tuple(runs)):
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

    # -- rate and concurrency limits --------------------------------------------------------
    def take_token(self, key: str, count: int, per: float, *, tokens: int = 1) -> float:
        """Token bucket of ``count`` per ``per`` seconds: take ``tokens`` at once, all or
        none (one transaction). 0.0 if they were taken, else the seconds until the bucket
        holds them all."""
        check_tokens(tokens, count)
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT tokens, ts FROM limits WHERE key = ?", (key,)).fetchone()
            held = float(count) if row is None else min(count, row["tokens"] + (now - row["ts"]) * count / per)
            wait = 0.0 if held >= tokens else (tokens - held) * per / count
            if wait == 0.0:
                held -= tokens
            db.execute("INSERT OR REPLACE INTO limits VALUES (?, ?, ?)", (key, held, now))
        return wait

    def acquire_slot(self, key: str, holder: str, limit: int, lease: float) -> bool:
        """Take one of ``limit`` slots of ``key`` for ``holder`` (a claim token) for ``lease``
        seconds (renewed by heartbeats); False if all are taken."""
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM slots WHERE key = ? AND expires < ?", (key, now))
            held = db.execute("SELECT COUNT(*) FROM slots WHERE key = ? AND holder != ?", (key, holder)).fetchone()[0]
            if held >= limit:
                return False
            db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (key, holder, now + lease))
        return True

    def release_slot(self, key: str, holder: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM slots WHERE key = ? AND holder = ?", (key, holder))

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> None:
        if held:
            with self._tx() as db:
                db.executemany(
                    "UPDATE slots SET expires = ? WHERE key = ? AND holder = ?",
                    [(time.time() + lease, key, holder) for key, holder in held],
                )

    def wait_finished(self, run_id: str, timeout: float) -> bool:
        # In-process finishes notify at once (of any run: it may not be this one); other
        # processes are noticed by polling.
        with self._finished:
            self._finished.wait(min(timeout, 0.05))
        return False
