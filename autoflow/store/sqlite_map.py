"""SQLite store, the transitions of ``.map`` nodes: expand into items, count items done, gather.

Items of a ``.map`` are rows of their own (``M[0]``, ``M[1]``, ...) whose ``map_of`` names
the map node; they never count in the run's ``remaining``. A map node holds no worker
while its items run; the last item done queues it again to gather the results in pages.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from autoflow.models import ErrorInfo
from autoflow.store.base import Progress, Ready, map_window
from autoflow.store.rules import message_priority
from autoflow.store.sqlite_settle import SQLiteSettling

__all__ = ["SQLiteMap"]


class SQLiteMap(SQLiteSettling):
    """Map transitions of :class:`~autoflow.store.sqlite.SQLiteStore`."""

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
