"""Redis store, run control and recovery: heartbeats, cancel, pause, resume, the reaper's
passes, sub-workflow bookkeeping, rate and concurrency limits, purge and waits."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoflow.models import RunStatus
from autoflow.store.base import CRASH_MESSAGE, HeartbeatResult, Ready, check_tokens, log_text
from autoflow.store.redis_lane import RedisLane
from autoflow.store.redis_reads import DONE, DUE, LEASE, LOGS, RUN, RedisReads, _guard, _s

__all__ = ["RedisControl"]

log = logging.getLogger("autoflow.store")

#: Seconds after which an entry of the creation journal is repaired by the reaper.
CREATING_GRACE = 10.0


_SCORE_EPOCH = 1_700_000_000  # 2023-11-14: creation times count from here...
_SCORE_SPAN = 2.0**31  # ...in this many seconds (until 2091), as a fraction below 1


def admission_score(priority: int, created_at: float) -> float:
    """A run's score in the admission queue (lowest first): by priority, highest first,
    then by creation time, oldest first. The creation time is a fraction below 1 added to
    ``-priority``: sub-millisecond apart for the usual priorities (0.5 s at ±1,000,000).
    Ties go by run id, which puts a keyed run (``k...``) after the plain runs (time-ordered
    ids) of the same score, so the time cannot be left out: keyed runs would wait for
    every plain run of their priority."""
    return -priority + min(max((created_at - _SCORE_EPOCH) / _SCORE_SPAN, 0.0), 0.999999)


class RedisControl(RedisReads):
    """Run-level operations of :class:`~autoflow.store.redis.RedisStore`."""

    finish_wakes_waiters = True  # XREAD on the run's "done" stream (see wait_finished)

    _scripts: dict[str, Any]
    _wire: RedisLane
    #: Called when an ended run's bookkeeping, sent ahead of a queue read, finds runs
    #: waiting for admission (a worker sets it to nudge its admission consumer).
    on_runs_waiting: Callable[[], None] | None = None

    def _call(self, name: str, run_id: str, *args: Any) -> Any:
        raise NotImplementedError

    def _eval(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        raise NotImplementedError

    def _ready(self, run_id: str, flat: Sequence[Any]) -> list[Ready]:
        raise NotImplementedError

    def _start(self, run_id: str) -> list[Ready]:
        raise NotImplementedError

    def _pending(self, child: bool) -> str:
        raise NotImplementedError

    def _index(self, pipe: Any, run_id: str, workflow: str, priority: int, created_at: float, child: bool) -> None:
        raise NotImplementedError

    @property
    def _retention_ms(self) -> int:
        return int(self.retention * 1000)

    @staticmethod
    def _logs(logs: Sequence[dict[str, Any]]) -> list[str]:
        return [log_text(r) for r in logs]

    def _finished(self, run_id: str, status: RunStatus, ok: Any, failed: Any) -> bool:
        """Global bookkeeping once a run ended: one atomic step on the global keys, which a
        second call for the same run (the reaper after a crash) leaves alone. True if runs
        are waiting for admission."""
        now = time.time()
        keys = [
            self._g("active"),
            self._g("active_sub"),
            self._pending(False),
            self._pending(True),
            self._g(f"done:{status.value}"),
            self._g("nstat"),
        ]
        args = (run_id, repr(now), int(ok or 0), int(failed or 0), int(now // 3600))
        # Put off, it goes as EVAL: a server that has not cached the script runs it all the same.
        if self._wire.later(("EVAL", self._wire.scripts["book"].script, len(keys), *keys, *args), self._booked):
            return False  # its reply says whether runs wait (see _booked)
        return int(self._eval("book", keys, *args)) > 0

    def _booked(self, reply: Any) -> None:
        """The reply of a run's bookkeeping that went ahead of a queue read: when runs wait
        for the slot it freed, ask for an admission (the workflow queue's consumer runs it,
        as this connection's trip is not over). A failed one (the server lost its scripts)
        is left to the reaper, which books every ended run still counted as active."""
        if isinstance(reply, Exception):
            log.warning("bookkeeping of an ended run failed (the reaper repeats it): %s", reply)
        elif int(reply) > 0 and self.on_runs_waiting is not None:
            self.on_runs_waiting()

    # -- leases, logs, control -------------------------------------------------------------
    @_guard
    def heartbeat(self, claims: Sequence[tuple[str, str, str]], lease: float) -> HeartbeatResult:
        by_run: dict[str, list[str]] = {}
        for run_id, node_id, token in claims:
            by_run.setdefault(run_id, []).extend([node_id, token])
        pipe = self.r.pipeline(transaction=False)
        for run_id, args in by_run.items():
            self._scripts["heartbeat"](keys=self._keys(run_id), args=[repr(float(lease)), *args], client=pipe)
        cancelled: set[str] = set()
        lost: set[tuple[str, str]] = set()
        for run_id, res in zip(by_run, pipe.execute(), strict=True):
            if _s(res[0]) == "1":
                cancelled.add(run_id)
            lost.update((run_id, _s(n)) for n in res[1:])
        return HeartbeatResult(frozenset(cancelled), frozenset(lost))

    @_guard
    def append_logs(self, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        if logs:
            self.r.rpush(self._keys(run_id)[LOGS], *self._logs(logs))

    @_guard
    def cancel_run(self, run_id: str) -> RunStatus | None:
        res = self._call("cancel_run", run_id, "", self._retention_ms)
        status = _s(res[0])  # res[4:] are child runs; the caller cancels them (other slots)
        if status == "gone":
            return None
        self.r.zrem(self._pending(False), run_id)
        self.r.zrem(self._pending(True), run_id)
        if res[1]:  # this call ended the run
            self._finished(run_id, RunStatus(_s(res[1])), res[2], res[3])
            return RunStatus(_s(res[1]))
        return RunStatus(status)

    @_guard
    def pause_run(self, run_id: str) -> RunStatus | None:
        status = _s(self._call("pause", run_id)[0])
        if status == "gone":
            return None
        if status == "paused":  # resume puts a never-started run back
            self.r.zrem(self._pending(False), run_id)
            self.r.zrem(self._pending(True), run_id)
        return RunStatus(status)

    @_guard
    def resume_run(self, run_id: str) -> list[Ready]:
        res = self._call("resume", run_id)
        status = _s(res[0])
        if status == "pending":
            priority, parent, created = self.r.hmget(self._keys(run_id)[RUN], "priority", "parent_run", "created_at")
            score = admission_score(int(priority or 0), float(created or time.time()))
            self.r.zadd(self._pending(bool(parent)), {run_id: score})
        return self._ready(run_id, res[1:]) if status == "running" else []

    # -- recovery --------------------------------------------------------------------------
    def _repair_creations(self, now: float) -> None:
        """Index runs whose creator died between creating and indexing them."""
        stale = [_s(i) for i in self.r.zrangebyscore(self._g("creating"), "-inf", now - CREATING_GRACE)]
        for run_id in stale:
            found = self.r.hmget(self._keys(run_id)[RUN], "workflow", "priority", "created_at", "parent_run")
            pipe = self.r.pipeline(transaction=False)
            if found[0] is None:  # never created: nothing to index
                pipe.zrem(self._g("creating"), run_id)
            else:
                workflow, priority, created, parent = found
                self._index(pipe, run_id, _s(workflow), int(priority or 0), float(created or now), bool(parent))
            pipe.execute()

    @_guard
    def reap(self, now: float, requeue_after: float, max_stalls: int, resend_limit: int | None = None) -> list[Ready]:
        ready: list[Ready] = []
        budget = -1 if resend_limit is None else resend_limit
        # Leases are measured on the server's clock; ``now`` only says how far ahead of the
        # local clock to look (0 for the reaper; tests look into the future).
        ahead = now - time.time()
        seconds, micros = self.r.time()
        server_now = seconds + micros / 1e6 + ahead
        self._repair_creations(server_now)
        active = [_s(i) for i in self.r.smembers(self._g("active"))]
        pipe = self.r.pipeline(transaction=False)
        for run_id in active:
            keys = self._keys(run_id)
            pipe.hget(keys[RUN], "status")
            pipe.zrange(keys[LEASE], 0, 0, withscores=True)  # the lease expiring first
            pipe.zrange(keys[DUE], 0, 0, withscores=True)  # the message waiting longest
        found = pipe.execute()
        oldest: dict[str, float] = {}
        for i, run_id in enumerate(active):
            status, lease, due = found[3 * i : 3 * i + 3]
            waited = due[0][1] if due else math.inf
            expired = bool(lease) and lease[0][1] < server_now
            stale = waited < server_now - requeue_after and budget != 0
            if status != "running" or expired or stale:  # only runs with something to do
                oldest[run_id] = waited
        for run_id in sorted(oldest, key=oldest.__getitem__):  # runs waiting longest first
            res = self._call(
                "reap",
                run_id,
                repr(ahead),
                repr(float(requeue_after)),
                max_stalls,
                self._retention_ms,
                CRASH_MESSAGE,
                budget,
            )
            if budget > 0:
                budget -= int(res[4])
            status, finished = _s(res[0]), _s(res[1])
            if status == "gone":
                self.r.srem(self._g("active"), run_id)
                self.r.srem(self._g("active_sub"), run_id)
            elif status == "pending":
                ready += self._start(run_id)
            elif status in _FINISHED_VALUES or finished:  # ended here, or its bookkeeping was lost
                self._finished(run_id, RunStatus(finished or status), res[2], res[3])
            ready += self._ready(run_id, res[5:])
        return ready

    @_guard
    def child_runs(self, run_id: str) -> list[str]:
        """Sub-workflow runs started by nodes of ``run_id``."""
        return [_s(c) for c in self.r.smembers(self._g(f"children:{run_id}"))]

    def note_child(self, run_id: str, node_id: str, child_run_id: str) -> None:
        """Remember that a node waits for a child run (for cancellation and recovery)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(self._g(f"children:{run_id}"), child_run_id)
        pipe.expire(self._g(f"children:{run_id}"), int(self.retention) + 3600)
        pipe.sadd(self._g("awaiting"), f"{run_id}|{node_id}|{child_run_id}")
        pipe.execute()

    @_guard
    def awaiting_children(self) -> list[tuple[str, str, str]]:
        """``(run_id, node_id, child_run_id)`` of sub-workflow nodes whose child run ended
        but were not settled (the worker that ended the child died)."""
        entries = [_s(e) for e in self.r.smembers(self._g("awaiting"))]
        if not entries:
            return []
        waiting = [tuple(e.split("|", 2)) for e in entries]
        pipe = self.r.pipeline(transaction=False)
        for run_id, node_id, child in waiting:
            pipe.hget(self._keys(run_id)[RUN], "status")
            pipe.hget(self._keys(child)[RUN], "status")
            pipe.hget(self._keys(run_id)[1], node_id)  # the parent node's state
        found = pipe.execute()
        ended: list[tuple[str, str, str]] = []
        settled: list[str] = []
        for i, (entry, (run_id, node_id, child)) in enumerate(zip(entries, waiting, strict=True)):
            parent_status, child_status, state = found[3 * i : 3 * i + 3]
            waits = state is not None and _s(state).startswith("running|") and f"|@sub:{child}|" in _s(state)
            if parent_status not in ("running", "paused") or not waits:
                settled.append(entry)  # settled already, or its run is gone
            elif child_status in _FINISHED_VALUES:
                ended.append((run_id, node_id, child))
        if settled:
            self.r.srem(self._g("awaiting"), *settled)
        return ended

    # -- rate and concurrency limits --------------------------------------------------------
    @_guard
    def take_token(self, key: str, count: int, per: float, *, tokens: int = 1) -> float:
        check_tokens(tokens, count)
        return float(self._eval("bucket", [self._g(f"rl:{key}")], count, per, tokens))

    @_guard
    def acquire_slot(self, key: str, holder: str, limit: int, lease: float) -> bool:
        return bool(self._eval("slot", [self._g(f"slot:{key}")], holder, limit, lease))

    @_guard
    def release_slot(self, key: str, holder: str) -> None:
        self.r.zrem(self._g(f"slot:{key}"), holder)

    @_guard
    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> None:
        if held:
            until = time.time() + lease
            pipe = self.r.pipeline(transaction=False)
            for key, holder in held:
                pipe.zadd(self._g(f"slot:{key}"), {holder: until}, xx=True)
            pipe.execute()

    @_guard
    def count_waiting(self) -> int:
        pipe = self.r.pipeline(transaction=False)
        for run_id in [_s(i) for i in self.r.smembers(self._g("active"))]:
            pipe.hget(self._keys(run_id)[RUN], "queued")
        return sum(int(n or 0) for n in pipe.execute())

    @_guard
    def purge(self, now: float, retention: float) -> int:
        cutoff = now - retention
        removed = 0
        for status in ("completed", "failed", "cancelled"):
            index = self._g(f"done:{status}")
            while ids := [_s(i) for i in self.r.zrangebyscore(index, "-inf", cutoff, start=0, num=_PURGE_PAGE)]:
                pipe = self.r.pipeline(transaction=False)
                for run_id in ids:
                    pipe.delete(*self._keys(run_id))
                removed += sum(int(n > 0) for n in pipe.execute())
                self.r.zrem(index, *ids)
        # Hourly node stats older than the retention.
        oldest_hour = int(cutoff // 3600)
        stale = [f for f in map(_s, self.r.hkeys(self._g("nstat"))) if int(f.split("|")[0]) < oldest_hour]
        if stale:
            self.r.hdel(self._g("nstat"), *stale)
        # History indexes (all runs, per workflow, per organization): entries of runs that
        # expired (TTL) or were deleted above.
        self._prune_history(self._g("runs"), cutoff)
        prefixes = (self._g("wf:"), self._g("org:"))
        for key in map(_s, self.r.scan_iter(match=self._g("*"), count=500)):  # one pass
            if key.startswith(prefixes):
                self._prune_history(key, cutoff)
        return removed

    def _prune_history(self, index: str, cutoff: float) -> None:
        """Drop the entries of ``index`` whose run is gone. A run created after ``cutoff``
        cannot have expired yet (retention counts from its end), so only older entries
        are looked at, a page at a time, one round trip per page."""
        offset = 0
        while ids := [_s(i) for i in self.r.zrangebyscore(index, "-inf", cutoff, start=offset, num=_PURGE_PAGE)]:
            pipe = self.r.pipeline(transaction=False)
            for run_id in ids:
                pipe.exists(self._keys(run_id)[RUN])
            gone = [run_id for run_id, alive in zip(ids, pipe.execute(), strict=True) if not alive]
            if gone:
                self.r.zrem(index, *gone)
            offset += len(ids) - len(gone)

    @_guard
    def wait_finished(self, run_id: str, timeout: float) -> bool:
        key = self._keys(run_id)[DONE]
        # The run's "done" stream gets one entry when it ends; XREAD blocks until then and
        # is a read command, so clients with read-only access can wait too.
        # The stream gets its entry only when the run ends: an answer says it has.
        return bool(self.r.xread({key: "0-0"}, count=1, block=max(1, int(min(timeout, 1.0) * 1000))))


_PURGE_PAGE = 500  # runs looked at per round trip when purging
_FINISHED_VALUES = {s.value for s in RunStatus if s.finished}
