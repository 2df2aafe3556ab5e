"""SQLite store, the write side of nodes: claim, complete, fail, settle children, reap.

Every public method is one ``BEGIN IMMEDIATE`` transaction (see ``SQLiteStore._tx``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from autoflow import codec
from autoflow.engine.planner import Decision, decide, final_status, message_priority
from autoflow.models import ErrorInfo, LogLevel, RunStatus
from autoflow.store.base import Claim, Progress, Ready, crash_error

__all__ = ["SQLiteTransitions", "engine_log"]

_OUTCOME_COLUMN = {"ok": "n_ok", "fail": "n_fail", "skip": "n_skip"}
_ACTIVE = ("running", "paused")


class SQLiteTransitions:
    """Node transitions of :class:`~autoflow.store.sqlite.SQLiteStore`."""

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    _finished: threading.Condition  # notified when a run ends (in-process waiters)

    @staticmethod
    def _log(db: sqlite3.Connection, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

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
            self._log(db, run_id, [engine_log(LogLevel.INFO, f"started (attempt {attempt})", node_id, now)])
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
        self._log(db, run_id, [engine_log(level, f"run {status.value}", now=now)])
        return status

    def _done(self, progress: Progress) -> Progress:
        if progress.finished is not None:
            with self._finished:
                self._finished.notify_all()
        return progress

    def reap(
        self, now: float, requeue_after: float, max_stalls: int, resend_limit: int | None = None
    ) -> list[Ready]:
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
                            engine_log(
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
                            engine_log(
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
                " AND n.due_at < ? AND r.status = 'running' AND r.cancel_requested = 0"
                " ORDER BY n.due_at LIMIT ?",
                (now - requeue_after, -1 if resend_limit is None else resend_limit),
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


def engine_log(
    level: LogLevel, message: str, node_id: str | None = None, now: float | None = None
) -> dict[str, Any]:
    return {"ts": now or time.time(), "level": level.value, "message": message, "node_id": node_id}
