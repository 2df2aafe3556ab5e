"""Redis store, the read side: snapshots, history, logs and stats; shared helpers.

Layout of one run (every key carries the hash tag ``{run_id}``; see lua/lib.lua):
``run`` (hash: the run's fields and counters), ``ns`` (hash: one packed state per node and
map item), ``topo`` (hash: one packed place in the graph per node), ``out``/``err``
(hashes: outputs, errors), ``lease``/``due`` (zsets: running leases, queued messages),
``logs`` (list), ``done`` (stream: one entry when the run ends), ``order`` (list of node
ids) and ``iv`` (hash: map item values).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.exceptions import RedisError

from autoflow import codec
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
    trusted,
)
from autoflow.store.sqlite_reads import first_error
from autoflow.templates import resolve_template

if TYPE_CHECKING:
    from autoflow.store.redis_lane import RedisLane

__all__ = ["RUN_KEYS", "RedisReads", "State"]

#: The keys of one run, in the order the Lua scripts expect them (see lua/lib.lua).
RUN_KEYS = ("run", "ns", "topo", "out", "err", "lease", "due", "logs", "done", "order", "iv")
RUN, NS, TOPO, OUT, ERR, LEASE, DUE, LOGS, DONE, ORDER, IV = range(len(RUN_KEYS))
_FINISHED = {s.value for s in RunStatus if s.finished}
#: The fields of a run's hash that its summary (``run_summaries``) reads: ``_run_info``'s
#: without nodes (no output template, code, signature, counters or topology).
_SUMMARY_FIELDS = (
    *("id", "workflow", "digest", "status", "priority", "inputs", "user_id", "organization_id", "trigger"),
    *("trigger_data", "created_at", "started_at", "finished_at", "cancel", "parent_run", "parent_node"),
    *("workflow_id", "workflow_version"),
)
_SUMMARY_STATUS = _SUMMARY_FIELDS.index("status")  # the field every run has
F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Positions in a node's packed state (a field of ``ns``; mirrors lua/lib.lua)."""

    ST, ATT, OWN, STARTED, FINISHED, STALL, WAKE, CHILD, OK, FAIL, SKIP, HANDLED, NITEMS, NEXT, DONE = range(15)

    @staticmethod
    def parse(raw: Any) -> list[str]:
        parts = _s(raw).split("|") if raw is not None else ["pending", "1"]
        return parts + [""] * (15 - len(parts))


def _guard(method: F) -> F:
    """Turn connection and server errors into BackendError naming the URL."""

    @functools.wraps(method)
    def wrapper(self: RedisReads, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RedisError as exc:
            raise BackendError(self.url, codec.redact_text(f"{type(exc).__name__}: {codec.safe_str(exc)}")) from None

    return wrapper  # type: ignore[return-value]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _f(value: Any) -> float | None:
    return float(value) if value not in (None, "") else None


class RedisReads:
    """Queries of :class:`~autoflow.store.redis.RedisStore` that change nothing."""

    r: redis.Redis
    url: str
    retention: float
    _wire: RedisLane

    def _keys(self, run_id: str) -> list[str]:
        raise NotImplementedError

    def _g(self, name: str) -> str:
        raise NotImplementedError

    @_guard
    def run_status(self, run_id: str) -> RunStatus | None:
        status = self.r.hget(self._keys(run_id)[RUN], "status")
        return None if status is None else RunStatus(_s(status))

    @_guard
    def run_statuses(self, run_ids: Sequence[str]) -> list[RunStatus | None]:
        return [None if status is None else RunStatus(_s(status)) for status in self._run_field(run_ids, "status")]

    @_guard
    def created_at(self, run_ids: Sequence[str]) -> list[float | None]:
        return [None if at is None else float(at) for at in self._run_field(run_ids, "created_at")]

    @_guard
    def run_summaries(self, run_ids: Sequence[str]) -> list[RunInfo | None]:
        found = self._run_fields(run_ids, ("HMGET", *_SUMMARY_FIELDS))
        return [
            None  # no run
            if values[_SUMMARY_STATUS] is None
            else self._run_info({k: v for k, v in zip(_SUMMARY_FIELDS, values, strict=True) if v is not None}, {}, [])
            for values in found
        ]

    def _run_field(self, run_ids: Sequence[str], name: str) -> list[Any]:
        """One field of each run's hash (None where there is no run): see :meth:`_run_fields`."""
        return self._run_fields(run_ids, ("HGET", name))

    def _run_fields(self, run_ids: Sequence[str], command: tuple[str, ...]) -> list[Any]:
        """``command`` (``HGET name``, ``HMGET names...``) on each run's hash, in one round
        trip on this thread's connection (packed by hiredis: a redis-py pipeline took 5x as
        long to pack and parse 1,000 of them)."""
        if not run_ids:
            return []
        verb, *fields = command
        replies = self._wire.send_many([(verb, self._keys(run_id)[RUN], *fields) for run_id in run_ids])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    @_guard
    def run_parent(self, run_id: str) -> tuple[str, str] | None:
        run, node = self.r.hmget(self._keys(run_id)[RUN], "parent_run", "parent_node")
        return (_s(run), _s(node)) if run and node else None

    @_guard
    def get_run(self, run_id: str) -> RunInfo | None:
        keys = self._keys(run_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys[RUN])
        pipe.lrange(keys[ORDER], 0, -1)
        run, order = pipe.execute()
        if not run:
            return None
        order = [_s(n) for n in order]
        # Only the run's own nodes: the items of a big .map are not read here.
        pipe = self.r.pipeline(transaction=False)
        for index in (NS, OUT, ERR, TOPO):
            pipe.hmget(keys[index], order)
        states, outs, errs, topos = pipe.execute() if order else ([], [], [], [])
        nodes = {}
        unhandled = []
        for i, node_id in enumerate(order):
            s = State.parse(states[i])
            status = NodeStatus(s[State.ST] or "pending")
            if status is NodeStatus.FAILED and s[State.HANDLED] != "1":
                unhandled.append(node_id)
            kind = _s(topos[i]).split("|", 7)[-1] if topos[i] else ""
            nodes[node_id] = trusted(  # written by the engine: no validation (hot path)
                NodeInfo,
                id=node_id,
                type=kind,
                status=status,
                attempt=int(s[State.ATT] or 1),
                stall_count=int(s[State.STALL] or 0),
                started_at=codec.from_ts(_f(s[State.STARTED])),
                finished_at=codec.from_ts(_f(s[State.FINISHED])),
                output=codec.loads(outs[i]),
                error=ErrorInfo.model_validate_json(errs[i]) if errs[i] else None,
                items_total=int(s[State.NITEMS]) if s[State.NITEMS] else None,
                items_done=int(s[State.DONE] or 0),
                child_run_id=s[State.CHILD] or None,
            )
        return self._run_info(run, nodes, unhandled)

    @staticmethod
    def _run_info(run: dict[str, str], nodes: dict[str, NodeInfo], unhandled: list[str]) -> RunInfo:
        status = RunStatus(run["status"])
        inputs = codec.loads(run.get("inputs")) or {}
        output = None
        if status is RunStatus.COMPLETED and nodes:
            output = resolve_template(
                codec.loads(run.get("output_tpl")), {k: n.output for k, n in nodes.items()}, inputs
            )
        return RunInfo(
            id=run["id"],
            workflow=run["workflow"],
            definition_hash=run.get("digest", ""),
            status=status,
            priority=int(run.get("priority", 0)),
            inputs=inputs,
            output=output,
            error=first_error(nodes, unhandled) if status is RunStatus.FAILED else None,
            user_id=run.get("user_id") or None,
            organization_id=run.get("organization_id") or None,
            trigger=run.get("trigger") or "manual",
            trigger_data=codec.loads(run.get("trigger_data")),
            created_at=codec.from_ts(float(run["created_at"])),
            started_at=codec.from_ts(_f(run.get("started_at"))),
            finished_at=codec.from_ts(_f(run.get("finished_at"))),
            cancel_requested=run.get("cancel") == "1",
            parent_run_id=run.get("parent_run") or None,
            parent_node_id=run.get("parent_node") or None,
            nodes=nodes,
            workflow_id=run.get("workflow_id") or None,
            workflow_version=int(run["workflow_version"]) if run.get("workflow_version") else None,
        )

    @_guard
    def list_runs(self, workflow: str | None, status: RunStatus | None, limit: int) -> list[RunInfo]:
        index = self._g(f"wf:{workflow}") if workflow else self._g("runs")
        found: list[RunInfo] = []
        start, page = 0, max(50, limit)
        while len(found) < limit:
            ids = [_s(i) for i in self.r.zrevrange(index, start, start + page - 1)]
            if not ids:
                break
            start += page
            pipe = self.r.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._keys(run_id)[RUN])
            gone: list[str] = []
            for run_id, run in zip(ids, pipe.execute(), strict=True):
                if not run:
                    gone.append(run_id)
                elif status is None or run["status"] == RunStatus(status).value:
                    found.append(self._run_info(run, {}, []))
            if gone:
                self.r.zrem(index, *gone)
                start -= len(gone)
        return found[:limit]

    @_guard
    def get_logs(self, run_id: str, since: int = 0, node_id: str | None = None, limit: int = 10_000) -> list[LogEntry]:
        key = self._keys(run_id)[LOGS]
        entries: list[LogEntry] = []
        start = max(0, since)
        while len(entries) < limit:
            raw = self.r.lrange(key, start, start + 999)
            if not raw:
                break
            for offset, text in enumerate(raw):
                record = json.loads(text)
                if node_id and record.get("node_id") != node_id:
                    continue
                entries.append(
                    LogEntry(
                        id=start + offset + 1,
                        timestamp=codec.from_ts(record["ts"]),
                        level=LogLevel(record["level"]),
                        message=record["message"],
                        node_id=record.get("node_id"),
                        data=record.get("data"),
                    )
                )
            start += len(raw)
        return entries[:limit]

    @_guard
    def stats(self) -> QueueStats:
        now = time.time()
        active = [_s(i) for i in self.r.smembers(self._g("active"))]
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(self._g("pending"))
        pipe.zcard(self._g("pending_sub"))
        for status in ("completed", "failed"):
            pipe.zcount(self._g(f"done:{status}"), now - self.retention, "+inf")
        for run_id in active:
            pipe.hmget(self._keys(run_id)[RUN], "queued", "running", "n_ok", "failed", "status")
        hours = [int(now // 3600) - h for h in range(math.ceil(self.retention / 3600) + 1)]
        pipe.hmget(self._g("nstat"), [f"{h}|{kind}" for h in hours for kind in ("completed", "failed")])
        res = pipe.execute()
        waiting, completed, failed = res[0] + res[1], res[2], res[3]
        live = res[4 : 4 + len(active)]
        counts = res[-1]
        buckets = list(zip(counts[0::2], counts[1::2], strict=True))
        node = QueueCounts()
        holding = 0
        for queued, running, ok, bad, status in live:
            if status is None:  # expired meanwhile: the reaper drops it from "active"
                continue
            holding += 1  # admitted: it holds its slot until booked, as admission counts it
            node.completed += int(ok or 0)
            node.failed += int(bad or 0)
            if status in _FINISHED:  # ended, not booked yet (a moment; the reaper's turn if its worker died)
                completed += status == RunStatus.COMPLETED.value
                failed += status == RunStatus.FAILED.value
                continue
            node.waiting += int(queued or 0)
            node.active += int(running or 0)
        for ok, bad in buckets:
            node.completed += int(ok or 0)
            node.failed += int(bad or 0)
        return QueueStats(
            workflow=QueueCounts(waiting=waiting, active=holding, completed=completed, failed=failed),
            node=node,
        )
