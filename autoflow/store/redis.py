"""Redis store: production. Every transition of a run is one Lua script over that run's
keys, which share the hash tag ``{run_id}`` (so Redis Cluster could hold them); global
indexes (pending runs, active runs, history, stats) are updated beside the scripts and
repaired by the reaper if a worker dies in between.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisError

from autoflow import codec
from autoflow.errors import BackendError
from autoflow.models import (
    ErrorInfo,
    RunStatus,
)
from autoflow.store.base import (
    CRASH_MESSAGE,
    Claim,
    HeartbeatResult,
    NewRun,
    NodeSeed,
    Progress,
    Ready,
    child_token,
    map_window,
)
from autoflow.store.catalog_redis import RedisCatalog
from autoflow.store.redis_reads import _FINISHED, RUN_KEYS, RedisReads, _guard, _s

__all__ = ["RedisStore"]

_SCRIPTS = (
    *("create", "start", "claim", "complete", "fail", "cancel_node", "heartbeat", "cancel_run", "pause", "resume"),
    *("reap", "defer", "await_child", "expand", "expand_items"),
)
#: Map items are uploaded this many at a time (one short script each), at most ~4 MB.
_ITEM_CHUNK, _ITEM_CHUNK_BYTES = 1000, 4 * 1024 * 1024
#: Seconds after which an entry of the creation journal is repaired by the reaper.
_CREATING_GRACE = 10.0
#: maxmemory policies that never evict keys; anything else could drop a run's state.
_SAFE_POLICIES = ("noeviction",)


class RedisStore(RedisReads, RedisCatalog):
    """The production store.

    Example::

        store = RedisStore.from_url("redis://localhost:6379/0", namespace="autoflow")
    """

    def __init__(
        self, client: redis.Redis, url: str, *, namespace: str = "autoflow", retention: float = 7 * 86400
    ) -> None:
        self.r = client
        self.url = codec.redact_text(url)
        self.ns = namespace
        self.retention = retention
        self.pool = client.connection_pool
        self._key_cache: dict[str, list[str]] = {}
        lua = resources.files("autoflow.store").joinpath("lua")
        lib = lua.joinpath("lib.lua").read_text()
        self._scripts = {
            name: client.register_script(lib + lua.joinpath(f"{name}.lua").read_text()) for name in _SCRIPTS
        }
        self._admit = client.register_script(lua.joinpath("admit.lua").read_text())
        self._bucket = client.register_script(lua.joinpath("bucket.lua").read_text())
        self._slot = client.register_script(lua.joinpath("slot.lua").read_text())

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str = "autoflow", retention: float = 7 * 86400, timeout: float = 3.0
    ) -> RedisStore:
        """Connect and check the server answers; BackendError (naming the URL) if not."""
        shown = codec.redact_text(url)
        try:
            client = redis.Redis.from_url(
                codec.quote_url_password(url),
                decode_responses=True,
                socket_connect_timeout=timeout,
                health_check_interval=30,
            )
            client.ping()
            version = client.info("server").get("redis_version", "0")
        except (RedisError, ValueError, OSError) as exc:
            codec.register_secret(codec.url_password(url))
            raise BackendError(shown, codec.redact_text(f"{type(exc).__name__}: {codec.safe_str(exc)}")) from None
        if tuple(int(x) for x in str(version).split(".")[:2]) < (6, 2):
            raise BackendError(shown, f"Redis {version} is too old; autoflow needs Redis >= 6.2")
        policy = _eviction_policy(client)
        if policy is not None and policy not in _SAFE_POLICIES:
            raise BackendError(
                shown,
                f"maxmemory-policy is {policy!r}: Redis may evict autoflow's keys and lose runs; "
                "set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction)",
            )
        return cls(client, url, namespace=namespace, retention=retention)

    # -- keys ------------------------------------------------------------------------------
    def _keys(self, run_id: str) -> list[str]:
        keys = self._key_cache.get(run_id)
        if keys is None:  # built once per run: every transition passes all of them
            keys = [f"{self.ns}:{{{run_id}}}:{k}" for k in RUN_KEYS]
            if len(self._key_cache) > 4096:
                self._key_cache.clear()
            self._key_cache[run_id] = keys
        return keys

    def _g(self, name: str) -> str:
        return f"{self.ns}:{{_g}}:{name}"

    def _call(self, name: str, run_id: str, *args: Any) -> Any:
        script = self._scripts[name]
        keys = self._keys(run_id)
        try:  # EVALSHA directly: the hot path skips redis-py's Script wrapper layers
            return self.r.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:  # e.g. the server restarted: load it and go on
            return script(keys=keys, args=list(args))

    @property
    def _retention_ms(self) -> int:
        return int(self.retention * 1000)

    def close(self) -> None:
        self.pool.disconnect()

    # -- definitions and runs --------------------------------------------------------------
    @_guard
    def put_definition(self, digest: str, body: str) -> None:
        self.r.set(f"{self.ns}:def:{digest}", body, nx=True)

    @_guard
    def get_definition(self, digest: str) -> str | None:
        value = self.r.get(f"{self.ns}:def:{digest}")
        return None if value is None else _s(value)

    @_guard
    def put_blob(self, key: str, data: bytes) -> None:
        self.r.set(f"{self.ns}:blob:{key}", base64.b64encode(data).decode())

    @_guard
    def get_blob(self, key: str) -> bytes | None:
        value = self.r.get(f"{self.ns}:blob:{key}")
        return None if value is None else base64.b64decode(value)

    @_guard
    def create_run(self, run: NewRun, nodes: Sequence[NodeSeed]) -> str:
        """One round trip: journal the creation, create the run atomically (unless its id,
        derived from an idempotency key, exists), then index it. A client dying half-way
        leaves a journal entry the reaper repairs, never an invisible pending run."""
        if run.idempotency_key:  # one key names one run: its id comes from the key
            run = dataclasses.replace(run, id=codec.keyed_run_id(run.idempotency_key))
        fields = {
            "id": run.id,
            "workflow": run.workflow,
            "digest": run.digest,
            "status": "pending",
            "priority": run.priority,
            "inputs": codec.dumps(run.inputs),
            "output_tpl": codec.dumps(run.output),
            "user_id": run.user_id or "",
            "organization_id": run.organization_id or "",
            "trigger": run.trigger,
            "trigger_data": codec.dumps(run.trigger_data),
            "idempotency_key": run.idempotency_key or "",
            "signature": run.signature or "",
            "code": run.code or "",
            "created_at": repr(run.created_at),
            "remaining": len(nodes),
            "running": 0,
            "queued": 0,
            "failed": 0,
            "n_ok": 0,
            "roots": ",".join(n.id for n in nodes if not n.parents),
            "parent_run": run.parent_run_id or "",
            "parent_node": run.parent_node_id or "",
            "workflow_id": run.workflow_id or "",
            "workflow_version": run.workflow_version or "",
        }
        seeds = [
            [
                n.id,
                n.type,
                ",".join(n.parents),
                ",".join(n.children),
                n.rule,
                n.priority,
                f"{n.when[0]}:{int(n.when[1])}" if n.when else False,
                ",".join(n.item_parents) if n.item_parents is not None else False,
            ]
            for n in nodes
        ]
        script = self._scripts["create"]
        keys = self._keys(run.id)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self._g("creating"), {run.id: run.created_at})
        pipe.evalsha(script.sha, len(keys), *keys, codec.dumps(fields), codec.dumps(seeds))
        child = run.parent_run_id is not None
        self._index(pipe, run.id, run.workflow, run.priority, run.created_at, child)
        self._index_org(pipe, run)
        try:
            pipe.execute()
        except NoScriptError:  # e.g. the server restarted: load the scripts and go again
            script(keys=keys, args=[codec.dumps(fields), codec.dumps(seeds)])
            pipe = self.r.pipeline(transaction=False)
            self._index(pipe, run.id, run.workflow, run.priority, run.created_at, child)
            self._index_org(pipe, run)
            pipe.execute()
        return run.id

    def _index_org(self, pipe: Any, run: NewRun) -> None:
        """The organization's history index (run queries by tenant, see catalog_redis.py)."""
        if run.organization_id:
            pipe.zadd(self._g(f"org:{run.organization_id}"), {run.id: run.created_at}, nx=True)

    def _pending(self, child: bool) -> str:
        """The admission queue: sub-workflow runs wait apart, admitted whatever the limit
        (their parent already holds a slot; waiting for another would deadlock)."""
        return self._g("pending_sub" if child else "pending")

    def _index(self, pipe: Any, run_id: str, workflow: str, priority: int, created_at: float, child: bool) -> None:
        """Queue the global index updates of a created run on ``pipe`` (all idempotent: a
        run found again by its key keeps its place), then clear its journal entry."""
        pipe.zadd(self._pending(child), {run_id: -priority}, nx=True)
        pipe.zadd(self._g("runs"), {run_id: created_at}, nx=True)
        pipe.zadd(self._g(f"wf:{workflow}"), {run_id: created_at}, nx=True)
        pipe.zrem(self._g("creating"), run_id)

    def _repair_creations(self, now: float) -> None:
        """Index runs whose creator died between creating and indexing them."""
        stale = [_s(i) for i in self.r.zrangebyscore(self._g("creating"), "-inf", now - _CREATING_GRACE)]
        for run_id in stale:
            found = self.r.hmget(self._keys(run_id)[0], "workflow", "priority", "created_at", "parent_run")
            pipe = self.r.pipeline(transaction=False)
            if found[0] is None:  # never created: nothing to index
                pipe.zrem(self._g("creating"), run_id)
            else:
                workflow, priority, created, parent = found
                self._index(pipe, run_id, _s(workflow), int(priority or 0), float(created or now), bool(parent))
            pipe.execute()

    def _ready(self, run_id: str, flat: Sequence[Any]) -> list[Ready]:
        out = []
        for i in range(0, len(flat), 4):
            eta = _s(flat[i + 3])
            out.append(Ready(run_id, _s(flat[i]), int(flat[i + 1]), int(flat[i + 2]), float(eta) if eta else None))
        return out

    @_guard
    def admit(self, limit: int) -> list[Ready]:
        ready: list[Ready] = []
        for child in [_s(i) for i in self.r.zrange(self._pending(True), 0, 99)]:
            ready += self.start_run(child)
        keys = [self._g("pending"), self._g("active"), self._g("active_sub")]
        for run_id in self._admit(keys=keys, args=[limit]):
            ready += self._start(_s(run_id))
        return ready

    @_guard
    def start_run(self, run_id: str) -> list[Ready]:
        """Start one pending run now, whatever the concurrency (sub-workflow runs: their
        parent already holds a slot)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(self._pending(True), run_id)
        pipe.zrem(self._pending(False), run_id)
        pipe.sadd(self._g("active"), run_id)
        pipe.sadd(self._g("active_sub"), run_id)
        pipe.execute()
        return self._start(run_id)

    def _start(self, run_id: str) -> list[Ready]:
        res = self._call("start", run_id, repr(time.time()))
        status = _s(res[0])
        if status == "started":
            return self._ready(run_id, res[1:])
        # Not pending any more: a run started earlier stays active (it was picked again
        # from a stray index entry); one that ended, vanished or never started leaves.
        if status not in ("running", "paused") or len(res) < 2 or _s(res[1]) != "1":
            self.r.srem(self._g("active"), run_id)
            self.r.srem(self._g("active_sub"), run_id)
        return []

    # -- node transitions ------------------------------------------------------------------
    @_guard
    def claim(self, run_id: str, node_id: str, attempt: int, token: str, lease: float) -> Claim | None:
        now = time.time()
        entry = codec.dumps({"ts": now, "level": "info", "message": f"started (attempt {attempt})", "node_id": node_id})
        res = self._call("claim", run_id, node_id, attempt, token, repr(float(lease)), "", entry)
        if not res:
            return None
        outputs = {_s(res[i]): codec.loads(res[i + 1]) for i in range(10, len(res), 2)}
        return Claim(
            run_id,
            node_id,
            attempt,
            _s(res[0]),
            _s(res[1]),
            codec.loads(res[2]),
            outputs,
            map_of=_s(res[3]) or None,
            item=codec.loads(res[4]),
            wake_at=float(res[5]) if res[5] else None,
            run_priority=int(res[6] or 0),
            code=_s(res[7]) or None,
            signature=_s(res[8]) or None,
            gather=int(res[9]) if res[9] else None,
        )

    @_guard
    def map_results(self, run_id: str, node_id: str, first: int, count: int) -> list[str]:
        fields = [f"{node_id}[{i}]" for i in range(first, first + count)]
        keys = self._keys(run_id)
        pipe = self.r.pipeline(transaction=False)
        for key in (keys[1], keys[9], keys[10]):  # st, out, err
            pipe.hmget(key, fields)
        sts, outs, errs = pipe.execute()
        return [
            _s(out if st == "completed" else err) if (out if st == "completed" else err) is not None else "null"
            for st, out, err in zip(sts, outs, errs, strict=True)
        ]

    def _progress(self, run_id: str, res: Sequence[Any]) -> Progress:
        if not res or int(res[0]) == 0:
            return Progress(False)
        finished = RunStatus(_s(res[1])) if res[1] else None
        if finished is not None:
            self._finished(run_id, finished)
        return Progress(True, self._ready(run_id, res[2:]), finished)

    @staticmethod
    def _logs(logs: Sequence[dict[str, Any]]) -> list[str]:
        return [codec.dumps(r) for r in logs]

    def _transition(
        self,
        name: str,
        run_id: str,
        node_id: str,
        token: str,
        args: Sequence[Any],
        logs: Sequence[dict[str, Any]],
        tail: Sequence[str] = (),
    ) -> Any:
        """Run a node transition script. Its ARGV: node, token, ``args``, the number of log
        entries, the entries, then ``tail`` (see lua/lib.lua)."""
        entries = self._logs(logs)
        return self._call(name, run_id, node_id, token, *args, len(entries), *entries, *tail)

    @_guard
    def complete(
        self, run_id: str, node_id: str, token: str, output_json: str, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        args = (output_json, repr(time.time()), self._retention_ms)
        return self._progress(run_id, self._transition("complete", run_id, node_id, token, args, logs))

    @_guard
    def fail(
        self,
        run_id: str,
        node_id: str,
        token: str,
        error: ErrorInfo,
        retry_in: float | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        retry = "" if retry_in is None else repr(float(retry_in))
        args = (error.model_dump_json(), retry, "", self._retention_ms)
        return self._progress(run_id, self._transition("fail", run_id, node_id, token, args, logs))

    @_guard
    def defer(
        self, run_id: str, node_id: str, token: str, until: float, waiting: bool, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        args = (repr(until), int(waiting))
        return self._progress(run_id, self._transition("defer", run_id, node_id, token, args, logs))

    @_guard
    def await_child(
        self, run_id: str, node_id: str, token: str, child_run_id: str, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        res = self._transition("await_child", run_id, node_id, token, (child_run_id,), logs)
        return self._progress(run_id, res)

    @_guard
    def expand(
        self,
        run_id: str,
        node_id: str,
        token: str,
        items: Sequence[str],
        max_parallel: int | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        # Items go up in short chunks (each fenced by the claim), then one step starts the map.
        chunk: list[str] = []
        size, first = 0, 0
        for i, item in enumerate(items):
            chunk.append(item)
            size += len(item)
            if len(chunk) >= _ITEM_CHUNK or size >= _ITEM_CHUNK_BYTES or i == len(items) - 1:
                if not int(self._call("expand_items", run_id, node_id, token, first, *chunk)):
                    return Progress(False)
                first, chunk, size = i + 1, [], 0
        window = map_window(len(items), max_parallel)
        args = (repr(time.time()), self._retention_ms, window, len(items))
        return self._progress(run_id, self._transition("expand", run_id, node_id, token, args, logs))

    @_guard
    def cancel_node(self, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]) -> Progress:
        args = (repr(time.time()), self._retention_ms)
        res = self._transition("cancel_node", run_id, node_id, token, args, logs)
        return self._progress(run_id, list(res[:2]))

    def _finished(self, run_id: str, status: RunStatus) -> None:
        """Global bookkeeping once a run ended (done once per run, guarded by a flag)."""
        run_key = self._keys(run_id)[0]
        pipe = self.r.pipeline(transaction=False)
        pipe.hsetnx(run_key, "booked", 1)
        pipe.hmget(run_key, "n_ok", "failed")
        first, (ok, failed) = pipe.execute()
        if not first:
            return
        now = time.time()
        bucket = self._g(f"nstat:{int(now // 3600)}")
        pipe = self.r.pipeline(transaction=False)
        pipe.srem(self._g("active"), run_id)
        pipe.srem(self._g("active_sub"), run_id)
        pipe.zrem(self._pending(False), run_id)
        pipe.zrem(self._pending(True), run_id)
        pipe.zadd(self._g(f"done:{status.value}"), {run_id: now})
        pipe.hincrby(bucket, "completed", int(ok or 0))
        pipe.hincrby(bucket, "failed", int(failed or 0))
        pipe.expire(bucket, int(self.retention) + 3600)
        pipe.execute()

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
            self.r.rpush(self._keys(run_id)[11], *self._logs(logs))

    @_guard
    def cancel_run(self, run_id: str) -> RunStatus | None:
        res = self._call("cancel_run", run_id, repr(time.time()), self._retention_ms)
        status = _s(res[0])  # res[1:] are child runs; the caller cancels them (other slots)
        if status == "gone":
            return None
        self.r.zrem(self._pending(False), run_id)
        self.r.zrem(self._pending(True), run_id)
        result = RunStatus(status)
        if result.finished:
            self._finished(run_id, result)
        return result

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
        res = self._call("resume", run_id, repr(time.time()))
        status = _s(res[0])
        if status == "pending":
            priority, parent = self.r.hmget(self._keys(run_id)[0], "priority", "parent_run")
            self.r.zadd(self._pending(bool(parent)), {run_id: -int(priority or 0)})
        return self._ready(run_id, res[1:]) if status == "running" else []

    # -- recovery --------------------------------------------------------------------------
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
            pipe.hget(keys[0], "status")
            pipe.zrange(keys[6], 0, 0, withscores=True)  # the lease expiring first
            pipe.zrange(keys[7], 0, 0, withscores=True)  # the message waiting longest
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
                budget -= int(res[2])
            status, finished = _s(res[0]), _s(res[1])
            if status == "gone":
                self.r.srem(self._g("active"), run_id)
            elif status == "pending":
                ready += self._start(run_id)
            elif status in _FINISHED or finished:
                self._finished(run_id, RunStatus(finished or status))
            ready += self._ready(run_id, res[3:])
        return ready

    @_guard
    def child_runs(self, run_id: str) -> list[str]:
        """Sub-workflow runs started by nodes of ``run_id``."""
        times = self.r.hgetall(self._keys(run_id)[8])
        return [_s(v) for k, v in times.items() if _s(k).endswith("|c")]

    @_guard
    def awaiting_children(self) -> list[tuple[str, str, str]]:
        """``(run_id, node_id, child_run_id)`` of sub-workflow nodes whose child run ended."""
        active = [_s(i) for i in self.r.smembers(self._g("active"))]
        pipe = self.r.pipeline(transaction=False)
        for run_id in active:
            pipe.hgetall(self._keys(run_id)[5])
        waiting = [
            (run_id, _s(node_id), _s(owner)[len(child_token("")) :])
            for run_id, owners in zip(active, pipe.execute(), strict=True)
            for node_id, owner in owners.items()
            if _s(owner).startswith(child_token(""))
        ]
        for _run_id, _node_id, child in waiting:
            pipe.hget(self._keys(child)[0], "status")
        ended = pipe.execute() if waiting else []
        return [item for item, status in zip(waiting, ended, strict=True) if status in _FINISHED]

    # -- rate and concurrency limits --------------------------------------------------------
    @_guard
    def take_token(self, key: str, count: int, per: float) -> float:
        return float(self._bucket(keys=[self._g(f"rl:{key}")], args=[count, per]))

    @_guard
    def acquire_slot(self, key: str, holder: str, limit: int, lease: float) -> bool:
        return bool(self._slot(keys=[self._g(f"slot:{key}")], args=[holder, limit, lease]))

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
            pipe.hget(self._keys(run_id)[0], "queued")
        return sum(int(n or 0) for n in pipe.execute())

    @_guard
    def purge(self, now: float, retention: float) -> int:
        cutoff = now - retention
        removed = 0
        for status in ("completed", "failed", "cancelled"):
            index = self._g(f"done:{status}")
            for run_id in [_s(i) for i in self.r.zrangebyscore(index, "-inf", cutoff)]:
                removed += int(self.r.delete(*self._keys(run_id)) > 0)
            self.r.zremrangebyscore(index, "-inf", cutoff)
        # History entries of runs that expired (TTL) or were deleted above.
        old = [_s(i) for i in self.r.zrangebyscore(self._g("runs"), "-inf", now)]
        gone = [run_id for run_id in old if not self.r.exists(self._keys(run_id)[0])]
        if gone:
            self.r.zrem(self._g("runs"), *gone)
        return removed

    @_guard
    def wait_finished(self, run_id: str, timeout: float) -> None:
        key = self._keys(run_id)[12]
        # The run's "done" stream gets one entry when it ends; XREAD blocks until then and
        # is a read command, so clients with read-only access can wait too.
        self.r.xread({key: "0-0"}, count=1, block=max(1, int(min(timeout, 1.0) * 1000)))


def _eviction_policy(client: redis.Redis) -> str | None:
    """The server's maxmemory-policy (CONFIG GET, else INFO when CONFIG is not allowed)."""
    try:
        found = client.config_get("maxmemory-policy")
        return str(found.get("maxmemory-policy")) if found else None
    except RedisError:  # managed Redis often disables CONFIG
        info = client.info("memory")
        policy = info.get("maxmemory_policy")
        return None if policy is None else str(policy)
