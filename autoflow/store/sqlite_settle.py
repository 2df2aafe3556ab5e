"""SQLite store, the steps that node transitions share inside their transaction.

Fencing (is the node still held under this token?), counting a node that completed,
failing, cancelling or skipping one, telling a finished node's children its outcome
(cascading skips, O(out-degree)) and ending the run when nothing is left. No method here
opens a transaction: each runs in the caller's (``SQLiteStore._tx``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from autoflow import codec
from autoflow.models import ErrorInfo, LogLevel, RunStatus
from autoflow.store.base import Progress, Ready, engine_log
from autoflow.store.rules import HANDLER_RULES, Decision, decide, final_status, message_priority, skip_outcome

__all__ = ["SQLiteSettling"]

_OUTCOME_COLUMN = {"ok": "n_ok", "fail": "n_fail", "skip": "n_skip"}
_ACTIVE = ("running", "paused")


class SQLiteSettling:
    """Shared steps of the node transitions of :class:`~autoflow.store.sqlite.SQLiteStore`,
    and what they need from it (its transaction, reads, log writer and finish signal)."""

    _finished: threading.Condition  # notified when a run ends (in-process waiters)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    @staticmethod
    def _log(db: sqlite3.Connection, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    # -- fencing ---------------------------------------------------------------------------
    def _held(
        self, db: sqlite3.Connection, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]
    ) -> sqlite3.Row | None:
        """The node's row if it runs under ``token`` (fencing), after writing ``logs``;
        None (and nothing written) otherwise."""
        row = db.execute(
            "SELECT n.status, n.owner, n.attempt, n.priority AS node_priority, n.map_of, n.rule, n.parents,"
            " n.children, r.priority, r.cancel_requested FROM nodes n JOIN runs r ON r.id = n.run_id"
            " WHERE n.run_id = ? AND n.node_id = ?",
            (run_id, node_id),
        ).fetchone()
        if row is None or row["status"] != "running" or row["owner"] != token:
            return None
        self._log(db, run_id, logs)
        return row  # type: ignore[no-any-return]

    # -- settling --------------------------------------------------------------------------
    def _completed(
        self,
        db: sqlite3.Connection,
        run_id: str,
        run_priority: int,
        node_id: str,
        rule: str,
        parents: str,
        now: float,
        known: tuple[str, str] | None = None,
    ) -> list[Ready]:
        """A node (not an item) completed: count it, handle failures it handled, settle
        (``known``: its children and output, as the caller read and wrote them)."""
        db.execute("UPDATE runs SET running = running - 1, remaining = remaining - 1 WHERE id = ?", (run_id,))
        if rule in HANDLER_RULES:
            names = json.loads(parents)
            if names:
                marks = ",".join("?" * len(names))
                handled = db.execute(
                    f"UPDATE nodes SET handled = 1 WHERE run_id = ? AND node_id IN ({marks})"
                    " AND status = 'failed' AND handled = 0",
                    (run_id, *names),
                ).rowcount
                db.execute("UPDATE runs SET failed = failed - ? WHERE id = ?", (handled, run_id))
        return self._settle(db, run_id, run_priority, node_id, "ok", now, known)

    @staticmethod
    def _cancel_node(db: sqlite3.Connection, run_id: str, node_id: str, now: float) -> None:
        item = db.execute(
            "UPDATE nodes SET status = 'cancelled', finished_at = ?, owner = NULL, lease_until = NULL"
            " WHERE run_id = ? AND node_id = ? RETURNING map_of",
            (now, run_id, node_id),
        ).fetchone()
        counted = 0 if item is not None and item[0] else 1  # items do not count in remaining
        db.execute("UPDATE runs SET running = running - 1, remaining = remaining - ? WHERE id = ?", (counted, run_id))

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
        self,
        db: sqlite3.Connection,
        run_id: str,
        run_priority: int,
        node_id: str,
        outcome: str,
        now: float,
        known: tuple[str, str] | None = None,
    ) -> list[Ready]:
        """Tell the children of a finished node its outcome; cascade skips. O(out-degree)
        per finished node. A child whose when= condition is this node is skipped at once
        when the node returned the other boolean (a branch not taken). ``known``: the
        node's children and output (JSON), when the caller holds them."""
        ready: list[Ready] = []
        stack = [(node_id, outcome)]
        while stack:
            parent, result = stack.pop()
            if parent == node_id and known is not None:
                found: Any = {"children": known[0], "output": known[1]}
            else:
                found = db.execute(
                    "SELECT children, output FROM nodes WHERE run_id = ? AND node_id = ?", (run_id, parent)
                ).fetchone()
            for child in json.loads(found["children"]):
                row = db.execute(
                    "SELECT status, when_node, when_value FROM nodes WHERE run_id = ? AND node_id = ?",
                    (run_id, child),
                ).fetchone()
                if row is None or row["status"] != "pending":
                    continue
                branch = result == "ok" and row["when_node"] == parent
                if branch and codec.loads(found["output"]) is not bool(row["when_value"]):  # not taken
                    self._skip(db, run_id, child, now)
                    stack.append((child, "skip"))
                    continue
                column = _OUTCOME_COLUMN[result]
                counts = db.execute(
                    f"UPDATE nodes SET {column} = {column} + 1 WHERE run_id = ? AND node_id = ?"
                    " RETURNING n_parents, n_ok, n_fail, n_skip, rule, priority",
                    (run_id, child),
                ).fetchone()
                decision = decide(
                    counts["rule"], counts["n_parents"], counts["n_ok"], counts["n_fail"], counts["n_skip"]
                )
                if decision is Decision.READY:
                    db.execute(
                        "UPDATE nodes SET status = 'queued', due_at = ? WHERE run_id = ? AND node_id = ?",
                        (now, run_id, child),
                    )
                    ready.append(Ready(run_id, child, 1, message_priority(run_priority, counts["priority"])))
                elif decision is Decision.SKIP:
                    self._skip(db, run_id, child, now)
                    stack.append((child, skip_outcome(counts["rule"], counts["n_fail"])))
        return ready

    @staticmethod
    def _skip(db: sqlite3.Connection, run_id: str, node_id: str, now: float) -> None:
        db.execute(
            "UPDATE nodes SET status = 'skipped', finished_at = ? WHERE run_id = ? AND node_id = ?",
            (now, run_id, node_id),
        )
        db.execute("UPDATE runs SET remaining = remaining - 1 WHERE id = ?", (run_id,))

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
