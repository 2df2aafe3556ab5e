"""SQLite store, the write side of nodes: claim, complete, fail, defer, settle children.

Every public method is one ``BEGIN IMMEDIATE`` transaction (see ``SQLiteStore._tx``).
Items of a ``.map`` are rows of their own (``M[0]``, ``M[1]``, ...) whose ``map_of`` names
the map node; they never count in the run's ``remaining``.
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
from autoflow.models import ErrorInfo, LogLevel, RunStatus
from autoflow.store.base import Claim, Progress, Ready, child_token, engine_log, map_window
from autoflow.store.rules import (
    HANDLER_RULES,
    Decision,
    decide,
    final_status,
    message_priority,
    skip_outcome,
)

__all__ = ["SQLiteTransitions"]

_OUTCOME_COLUMN = {"ok": "n_ok", "fail": "n_fail", "skip": "n_skip"}
_ACTIVE = ("running", "paused")
_WAITING = ("queued", "retrying", "waiting")


def _parent_value(row: sqlite3.Row) -> Any:
    """What a child receives from a parent: its output, its error (failed), or None."""
    if row["status"] == "completed":
        return codec.loads(row["output"])
    if row["status"] == "failed" and row["error"]:
        return json.loads(row["error"])
    return None


class SQLiteTransitions:
    """Node transitions of :class:`~autoflow.store.sqlite.SQLiteStore`."""

    _finished: threading.Condition  # notified when a run ends (in-process waiters)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    @staticmethod
    def _log(db: sqlite3.Connection, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

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

    # -- map -------------------------------------------------------------------------------
    def expand(
        self,
        run_id: str,
        node_id: str,
        token: str,
        items: Sequence[str],
        max_parallel: int | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        """A map node got its items (JSON texts): create one row each, queue the first
        ``max_parallel`` (all if None); the node waits for them, holding no worker."""
        with self._tx() as db:
            now = time.time()  # under the write lock: times follow the order of commits
            row = self._held(db, run_id, node_id, token, logs)
            if row is None:
                return Progress(False)
            if not items:
                db.execute(
                    "UPDATE nodes SET status = 'completed', output = '[]', finished_at = ?, owner = NULL,"
                    " lease_until = NULL, n_items = 0, done_items = 0 WHERE run_id = ? AND node_id = ?",
                    (now, run_id, node_id),
                )
                ready = self._completed(db, run_id, row["priority"], node_id, row["rule"], row["parents"], now)
                return self._done(Progress(True, ready, self._maybe_finish(db, run_id, now)))
            window = map_window(len(items), max_parallel)
            db.execute(
                "UPDATE nodes SET owner = '@map', lease_until = NULL, n_items = ?, next_item = ?,"
                " done_items = 0, max_parallel = ? WHERE run_id = ? AND node_id = ?",
                (len(items), window, max_parallel, run_id, node_id),
            )
            db.executemany(
                "INSERT INTO nodes (run_id, node_id, seq, type, status, n_parents, rule, priority, parents,"
                " children, map_of, item, due_at) SELECT run_id, ?, ?, type, ?, 0, rule, priority,"
                " COALESCE(item_parents, parents),"
                " '[]', node_id, ?, ? FROM nodes WHERE run_id = ? AND node_id = ?",
                [
                    (f"{node_id}[{i}]", i, "queued" if i < window else "pending", item, now, run_id, node_id)
                    for i, item in enumerate(items)
                ],
            )
            prio = message_priority(row["priority"], row["node_priority"])
        return Progress(True, [Ready(run_id, f"{node_id}[{i}]", 1, prio) for i in range(window)])

    def _item_done(
        self, db: sqlite3.Connection, run_id: str, run_priority: int, map_id: str, now: float
    ) -> list[Ready]:
        """One item finished (completed, or failed under all_done): O(1) unless it was the last."""
        m = db.execute(
            "UPDATE nodes SET done_items = done_items + 1 WHERE run_id = ? AND node_id = ? AND status = 'running'"
            " RETURNING done_items, n_items, next_item, priority, attempt",
            (run_id, map_id),
        ).fetchone()
        if m is None:  # the map already ended (failed or cancelled)
            return []
        ready: list[Ready] = []
        if m["next_item"] < m["n_items"]:
            item_id = f"{map_id}[{m['next_item']}]"
            db.execute(
                "UPDATE nodes SET next_item = next_item + 1 WHERE run_id = ? AND node_id = ?",
                (run_id, map_id),
            )
            db.execute(
                "UPDATE nodes SET status = 'queued', due_at = ? WHERE run_id = ? AND node_id = ?",
                (now, run_id, item_id),
            )
            ready.append(Ready(run_id, item_id, 1, message_priority(run_priority, m["priority"])))
        if m["done_items"] < m["n_items"]:
            return ready
        # Every item is done: queue the map node again; its worker gathers the results in
        # pages (map_results) and completes it, so no transaction walks every item.
        db.execute(
            "UPDATE nodes SET status = 'queued', owner = NULL, due_at = ? WHERE run_id = ? AND node_id = ?",
            (now, run_id, map_id),
        )
        db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
        ready.append(Ready(run_id, map_id, m["attempt"], message_priority(run_priority, m["priority"])))
        return ready

    def map_results(self, run_id: str, node_id: str, first: int, count: int) -> list[str]:
        rows = self._read(
            "SELECT status, output, error FROM nodes WHERE run_id = ? AND map_of = ? AND seq >= ? AND seq < ?"
            " ORDER BY seq",
            (run_id, node_id, first, first + count),
        )
        return [(r["output"] if r["status"] == "completed" else r["error"]) or "null" for r in rows]

    def _item_failed(
        self,
        db: sqlite3.Connection,
        run_id: str,
        run_priority: int,
        map_id: str,
        item_id: str,
        error: ErrorInfo,
        now: float,
    ) -> list[Ready]:
        db.execute(
            "UPDATE nodes SET status = 'failed', error = ?, finished_at = ?, owner = NULL, lease_until = NULL"
            " WHERE run_id = ? AND node_id = ?",
            (error.model_dump_json(), now, run_id, item_id),
        )
        db.execute("UPDATE runs SET running = running - 1 WHERE id = ?", (run_id,))
        rule = db.execute("SELECT rule FROM nodes WHERE run_id = ? AND node_id = ?", (run_id, map_id)).fetchone()
        if rule is not None and rule[0] == "all_done":  # failures tolerated: the item's error is its result
            return self._item_done(db, run_id, run_priority, map_id, now)
        running = db.execute(
            "SELECT 1 FROM nodes WHERE run_id = ? AND node_id = ? AND status = 'running'", (run_id, map_id)
        ).fetchone()
        if running is None:
            return []
        db.execute(
            "UPDATE nodes SET status = 'cancelled', finished_at = ?, due_at = NULL WHERE run_id = ?"
            " AND map_of = ? AND status IN ('pending', 'queued', 'retrying', 'waiting')",
            (now, run_id, map_id),
        )
        return self._fail_node(db, run_id, run_priority, map_id, error, now, running=True)

    # -- shared steps ----------------------------------------------------------------------
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
