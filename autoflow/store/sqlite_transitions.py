"""SQLite store, the write side of one node: claim, complete, fail, cancel, defer, await a child.

Every public method is one ``BEGIN IMMEDIATE`` transaction (see ``SQLiteStore._tx``).
What follows a node's outcome (settling its children, ending the run) is in
``sqlite_settle.py``; the items of a ``.map`` in ``sqlite_map.py``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from autoflow import codec
from autoflow.models import ErrorInfo, LogLevel
from autoflow.store.base import Claim, Progress, Ready, child_token, engine_log
from autoflow.store.rules import message_priority
from autoflow.store.sqlite_map import SQLiteMap

__all__ = ["SQLiteTransitions"]

_WAITING = ("queued", "retrying", "waiting")


def _parent_value(row: sqlite3.Row) -> Any:
    """What a child receives from a parent: its output, its error (failed), or None."""
    if row["status"] == "completed":
        return codec.loads(row["output"])
    if row["status"] == "failed" and row["error"]:
        return json.loads(row["error"])
    return None


class SQLiteTransitions(SQLiteMap):
    """Node transitions of :class:`~autoflow.store.sqlite.SQLiteStore`."""

    # -- claim -----------------------------------------------------------------------------
    def claim(self, run_id: str, node_id: str, attempt: int, token: str, lease: float) -> Claim | None:
        with self._tx() as db:
            now = time.time()  # under the write lock: times follow the order of commits
            return self._claim(db, run_id, node_id, attempt, token, lease, now)

    def _claim(
        self,
        db: sqlite3.Connection,
        run_id: str,
        node_id: str,
        attempt: int,
        token: str,
        lease: float,
        now: float,
        known: dict[str, str] | None = None,
        logs: list[dict[str, Any]] | None = None,
    ) -> Claim | None:
        """Queued/retrying/waiting → running for this attempt, in the open transaction.
        ``known``: outputs (JSON) of parents that just completed in this transaction (not
        read again); ``logs``: where the claim's log line goes (written by the caller),
        else it is written here."""
        row = db.execute(
            "SELECT n.status, n.attempt, n.parents, n.map_of, n.item, n.wake_at, n.n_items, r.priority,"
            " r.status AS run_status, r.cancel_requested, r.workflow, r.digest, r.inputs, r.code, r.signature"
            " FROM nodes n JOIN runs r ON r.id = n.run_id"
            " WHERE n.run_id = ? AND n.node_id = ?",
            (run_id, node_id),
        ).fetchone()
        if (
            row is None
            or row["status"] not in _WAITING
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
        gather = row["n_items"] if row["map_of"] is None else None
        parents = [] if gather is not None else json.loads(row["parents"])
        known = known or {}
        values = {p: codec.loads(known[p]) for p in parents if p in known}  # written in this transaction
        unknown = [p for p in parents if p not in known]
        if unknown:
            marks = ",".join("?" * len(unknown))
            for r in db.execute(
                f"SELECT node_id, status, output, error FROM nodes WHERE run_id = ? AND node_id IN ({marks})",
                (run_id, *unknown),
            ):
                values[r["node_id"]] = _parent_value(r)
        started = engine_log(LogLevel.INFO, f"started (attempt {attempt})", node_id, now)
        if logs is None:
            self._log(db, run_id, [started])
        else:
            logs.append(started)
        return Claim(
            run_id,
            node_id,
            attempt,
            row["workflow"],
            row["digest"],
            codec.loads(row["inputs"]),
            values,
            map_of=row["map_of"],
            item=codec.loads(row["item"]),
            wake_at=row["wake_at"],
            run_priority=row["priority"],
            code=row["code"],
            signature=row["signature"],
            gather=gather,
        )

    # -- outcomes --------------------------------------------------------------------------
    def complete(
        self,
        run_id: str,
        node_id: str,
        token: str,
        output_json: str,
        logs: Sequence[dict[str, Any]],
        next_token: str | None = None,
        lease: float = 0.0,
    ) -> Progress:
        with self._tx() as db:
            now = time.time()  # under the write lock: times follow the order of commits
            row = self._held(db, run_id, node_id, token, ())
            if row is None:
                return Progress(False)
            lines = list(logs)  # the worker's lines and the continuation's, in one insert
            db.execute(
                "UPDATE nodes SET status = 'completed', output = ?, error = NULL, finished_at = ?,"
                " owner = NULL, lease_until = NULL WHERE run_id = ? AND node_id = ?",
                (output_json, now, run_id, node_id),
            )
            if row["map_of"]:
                db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
                ready = self._item_done(db, run_id, row["priority"], row["map_of"], now)
            else:
                ready = self._completed(
                    db,
                    run_id,
                    row["priority"],
                    node_id,
                    row["rule"],
                    row["parents"],
                    now,
                    (row["children"], output_json),
                )
            claim = None
            now_ready = [r for r in ready if r.eta is None]
            if next_token and now_ready:  # continue with the first ready node, in this transaction
                first = now_ready[0]
                known = None if row["map_of"] else {node_id: output_json}
                claim = self._claim(db, run_id, first.node_id, first.attempt, next_token, lease, now, known, lines)
                if claim is not None:
                    ready = [r for r in ready if r is not first]
            self._log(db, run_id, lines)
            # A node of the run now runs (the continuation): it cannot have finished.
            finished = None if claim is not None else self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, ready, finished, claim))

    def fail(
        self,
        run_id: str,
        node_id: str,
        token: str,
        error: ErrorInfo,
        retry_in: float | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        with self._tx() as db:
            now = time.time()  # under the write lock: times follow the order of commits
            row = self._held(db, run_id, node_id, token, logs)
            if row is None:
                return Progress(False)
            ready: list[Ready] = []
            if retry_in is not None and not row["cancel_requested"]:
                retry_at = now + retry_in
                attempt = row["attempt"] + 1
                db.execute(
                    "UPDATE nodes SET status = 'retrying', attempt = ?, error = ?, due_at = ?,"
                    " owner = NULL, lease_until = NULL, finished_at = ? WHERE run_id = ? AND node_id = ?",
                    (attempt, error.model_dump_json(), retry_at, now, run_id, node_id),
                )
                db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
                prio = message_priority(row["priority"], row["node_priority"])
                return Progress(True, [Ready(run_id, node_id, attempt, prio, retry_at)])
            if row["cancel_requested"]:
                self._cancel_node(db, run_id, node_id, now)
            elif row["map_of"]:
                ready = self._item_failed(db, run_id, row["priority"], row["map_of"], node_id, error, now)
            else:
                ready = self._fail_node(db, run_id, row["priority"], node_id, error, now, running=True)
            finished = self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, ready, finished))

    def cancel_node(self, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]) -> Progress:
        with self._tx() as db:
            now = time.time()  # under the write lock: times follow the order of commits
            if self._held(db, run_id, node_id, token, logs) is None:
                return Progress(False)
            self._cancel_node(db, run_id, node_id, now)
            finished = self._maybe_finish(db, run_id, now)
        return self._done(Progress(True, [], finished))

    def defer(
        self,
        run_id: str,
        node_id: str,
        token: str,
        until: float,
        waiting: bool,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        with self._tx() as db:
            row = self._held(db, run_id, node_id, token, logs)
            if row is None:
                return Progress(False)
            db.execute(
                "UPDATE nodes SET status = ?, due_at = ?, wake_at = CASE WHEN ? THEN ? ELSE wake_at END,"
                " owner = NULL, lease_until = NULL WHERE run_id = ? AND node_id = ?",
                ("waiting" if waiting else "queued", until, waiting, until, run_id, node_id),
            )
            db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
            prio = message_priority(row["priority"], row["node_priority"])
        return Progress(True, [Ready(run_id, node_id, row["attempt"], prio, until)])

    def await_child(
        self, run_id: str, node_id: str, token: str, child_run_id: str, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        with self._tx() as db:
            if self._held(db, run_id, node_id, token, logs) is None:
                return Progress(False)
            db.execute(
                "UPDATE nodes SET owner = ?, lease_until = NULL, child_run = ? WHERE run_id = ? AND node_id = ?",
                (child_token(child_run_id), child_run_id, run_id, node_id),
            )
        return Progress(True)
