"""SQLite store, run control and recovery: cancel, pause, resume, reap, purge."""

from __future__ import annotations

import time

from autoflow.models import LogLevel, RunStatus
from autoflow.store.base import Progress, Ready, crash_error, engine_log
from autoflow.store.rules import message_priority
from autoflow.store.sqlite_reads import SQLiteReads
from autoflow.store.sqlite_transitions import SQLiteTransitions

__all__ = ["SQLiteControl"]

_WAITING = "('queued', 'retrying', 'waiting')"


class SQLiteControl(SQLiteTransitions, SQLiteReads):
    """Run-level operations of :class:`~autoflow.store.sqlite.SQLiteStore`, on top of its
    node transitions and reads."""

    # -- control ---------------------------------------------------------------------------
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
                f" AND status IN ('pending', {_WAITING[1:-1]}) RETURNING map_of",
                (now, run_id),
            ).fetchall()
            counted = sum(1 for r in changed if not r["map_of"])
            db.execute("UPDATE runs SET remaining = remaining - ? WHERE id = ?", (counted, run_id))
            # Nodes waiting on their items or a child run hold no worker: end them now.
            for waiting in db.execute(
                "SELECT node_id FROM nodes WHERE run_id = ? AND status = 'running' AND owner LIKE '@%'",
                (run_id,),
            ).fetchall():
                self._cancel_node(db, run_id, waiting["node_id"], now)
            self._log(db, run_id, [engine_log(LogLevel.WARN, "cancellation requested", now=now)])
            finished = self._maybe_finish(db, run_id, now)
            status = finished or RunStatus(row["status"])
        self._done(Progress(True, [], finished))
        return status

    def child_runs(self, run_id: str) -> list[str]:
        """Sub-workflow runs started by nodes of ``run_id``."""
        rows = self._read("SELECT child_run FROM nodes WHERE run_id = ? AND child_run IS NOT NULL", (run_id,))
        return [r["child_run"] for r in rows]

    def pause_run(self, run_id: str) -> RunStatus | None:
        with self._tx() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if row["status"] in ("pending", "running"):
                db.execute("UPDATE runs SET status = 'paused' WHERE id = ?", (run_id,))
                self._log(db, run_id, [engine_log(LogLevel.INFO, "run paused")])
                return RunStatus.PAUSED
            return RunStatus(row["status"])

    def resume_run(self, run_id: str) -> list[Ready]:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status, started_at, priority FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row["status"] != "paused":
                return []
            status = "running" if row["started_at"] is not None else "pending"
            db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
            self._log(db, run_id, [engine_log(LogLevel.INFO, "run resumed")])
            rows = db.execute(
                f"SELECT node_id, attempt, priority, due_at FROM nodes WHERE run_id = ? AND status IN {_WAITING}",
                (run_id,),
            ).fetchall()
            db.execute(
                f"UPDATE nodes SET due_at = MAX(COALESCE(due_at, 0), ?) WHERE run_id = ? AND status IN {_WAITING}",
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

    # -- recovery --------------------------------------------------------------------------
    def reap(self, now: float, requeue_after: float, max_stalls: int, resend_limit: int | None = None) -> list[Ready]:
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
                db.execute(
                    "UPDATE nodes SET stall_count = ? WHERE run_id = ? AND node_id = ?",
                    (stalls, run_id, node_id),
                )
                if row["cancel_requested"]:
                    self._cancel_node(db, run_id, node_id, now)
                elif stalls > max_stalls:
                    message = f"worker lost {stalls} time(s); node failed as crashed"
                    self._log(db, run_id, [engine_log(LogLevel.ERROR, message, node_id, now)])
                    error = crash_error(node_id, stalls)
                    ready += self._fail_node(db, run_id, row["priority"], node_id, error, now, running=True)
                else:
                    db.execute(
                        "UPDATE nodes SET status = 'queued', owner = NULL, lease_until = NULL, due_at = ?"
                        " WHERE run_id = ? AND node_id = ?",
                        (now, run_id, node_id),
                    )
                    db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
                    message = f"worker lost (lease expired); re-queued (stall {stalls})"
                    self._log(db, run_id, [engine_log(LogLevel.WARN, message, node_id, now)])
                    prio = message_priority(row["priority"], row["node_priority"])
                    ready.append(Ready(run_id, node_id, row["attempt"], prio))
                finished = self._maybe_finish(db, run_id, now) or finished
            stale = db.execute(
                "SELECT n.run_id, n.node_id, n.attempt, n.priority AS node_priority, r.priority"
                f" FROM nodes n JOIN runs r ON r.id = n.run_id WHERE n.status IN {_WAITING}"
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

    def awaiting_children(self) -> list[tuple[str, str, str]]:
        """``(run_id, node_id, child_run_id)`` of sub-workflow nodes whose child run ended."""
        rows = self._read(
            "SELECT n.run_id, n.node_id, n.child_run FROM nodes n JOIN runs c ON c.id = n.child_run"
            " WHERE n.status = 'running' AND n.owner LIKE '@sub:%'"
            " AND c.status IN ('completed', 'failed', 'cancelled')"
        )
        return [(r["run_id"], r["node_id"], r["child_run"]) for r in rows]

    def count_waiting(self) -> int:
        return int(self._read(f"SELECT COUNT(*) FROM nodes WHERE status IN {_WAITING}")[0][0])

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
