"""Redis store: production. Every transition of a run is one Lua function (a script on
servers without functions: ``redis_lane.py``) over that run's keys, which share the hash
tag ``{run_id}`` (so Redis Cluster could hold them); global
indexes (pending runs, active runs, history, stats) are updated beside the scripts, in the
same round trip where possible, and repaired by the reaper if a worker dies in between.

The hot path is lean on purpose (see docs/performance.md): a node's state is one packed
hash field, a transition reads and writes the run's counters once, and completing a node
can claim the next ready one for the same worker in the same script (a chain costs one
round trip per node).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis
from redis.exceptions import RedisError

from autoflow import codec
from autoflow.errors import BackendError
from autoflow.models import ErrorInfo, RunStatus
from autoflow.store.base import Claim, NodeSeed, Progress, map_window
from autoflow.store.catalog_redis import RedisCatalog
from autoflow.store.redis_lane import RedisLane
from autoflow.store.redis_reads import ERR, NS, OUT, RUN_KEYS, _guard, _s
from autoflow.store.redis_runs import RedisRuns

__all__ = ["RedisStore"]

_RUN_SCRIPTS = (
    *("create", "start", "claim", "complete", "fail", "cancel_node", "heartbeat", "cancel_run", "pause", "resume"),
    *("reap", "defer", "await_child", "expand", "expand_items"),
)
_GLOBAL_SCRIPTS = ("admit", "bucket", "slot", "book")
#: Map items are uploaded this many at a time (one short script each), at most ~4 MB.
_ITEM_CHUNK, _ITEM_CHUNK_BYTES = 1000, 4 * 1024 * 1024
#: maxmemory policies that never evict keys; anything else could drop a run's state.
_SAFE_POLICIES = ("noeviction",)
#: The fixed fields of a claim in a script's reply (see claim_data in lua/lib_flow.lua).
_CLAIM_FIELDS = 13


class _Facts(NamedTuple):
    """What a worker remembers of a run it claimed a node of: immutable for the run's life."""

    workflow: str
    digest: str
    inputs: Any
    code: str | None
    signature: str | None
    parent: bool  # a sub-workflow run: its end settles a node of its parent


class RedisStore(RedisRuns, RedisCatalog):
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
        self._facts: dict[str, _Facts] = {}  # see _run_facts
        self._facts_lock = threading.Lock()
        # see RedisRuns._topology
        self._topologies: dict[str, tuple[tuple[NodeSeed, ...], tuple[str, list[Any], str]]] = {}
        # The hot path's connections and Lua.
        self._wire = RedisLane(client, _RUN_SCRIPTS, _GLOBAL_SCRIPTS, url=self.url)
        self._scripts = self._wire.scripts

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "autoflow",
        retention: float = 7 * 86400,
        timeout: float = 3.0,
        functions: bool = True,
    ) -> RedisStore:
        """Connect, check the server answers and load the transitions' function library
        (where the server has functions; ``functions=False``: never, they run as
        scripts); BackendError (naming the URL) if not."""
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
        store = cls(client, url, namespace=namespace, retention=retention)
        if not functions:
            store.use_scripts()
            return store
        try:
            store._load_functions()
        except BackendError:
            store.close()
            raise
        return store

    @_guard
    def _load_functions(self) -> None:
        """Load the transitions' function library now (one round trip a first transition
        would make anyway): a library the server refuses fails the store's opening, not a
        worker's first node."""
        self._wire.load()

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
        """Run the script of one run's transition (over that run's keys)."""
        return self._eval(name, self._keys(run_id), *args)

    def use_scripts(self) -> None:
        """Send transitions as scripts (EVALSHA) even where the server has functions."""
        self._wire.use_scripts()

    def _eval(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        """Run a transition or a global script (see ``redis_lane.RedisLane.call``)."""
        return self._wire.call(name, keys, *args)

    def close(self) -> None:
        self.pool.disconnect()
        self._wire.close()

    # -- node transitions ------------------------------------------------------------------
    @_guard
    def claim(self, run_id: str, node_id: str, attempt: int, token: str, lease: float) -> Claim | None:
        res = self._call("claim", run_id, node_id, attempt, token, repr(float(lease)))
        if not res:
            return None
        facts = _Facts(
            _s(res[2]), _s(res[3]), codec.loads(res[4]), _s(res[9]) or None, _s(res[10]) or None, bool(res[12])
        )
        return self._claim(run_id, res, 0, self._remember(run_id, facts))

    def _remember(self, run_id: str, facts: _Facts) -> _Facts:
        """Keep a run's facts for the continuations of its nodes (the newest 1,024 runs)."""
        with self._facts_lock:
            self._facts[run_id] = facts
            while len(self._facts) > 1024:
                self._facts.pop(next(iter(self._facts)))
        return facts

    def _run_facts(self, run_id: str) -> _Facts:
        """A run's immutable facts (workflow, digest, inputs, code, signature): remembered
        from its last claim here, so a continuation's reply need not carry them."""
        found = self._facts.get(run_id)
        if found is not None:
            return found
        workflow, digest, inputs, code, signature, parent = self.r.hmget(
            self._keys(run_id)[0], ["workflow", "digest", "inputs", "code", "signature", "parent_run"]
        )
        facts = _Facts(
            _s(workflow),
            _s(digest),
            codec.loads(inputs),
            _s(code) if code else None,
            _s(signature) if signature else None,
            bool(parent),
        )
        return self._remember(run_id, facts)  # read once, not once per continuation

    def run_parent(self, run_id: str) -> tuple[str, str] | None:
        facts = self._facts.get(run_id)
        if facts is not None and not facts.parent:  # known here from a claim: no read
            return None
        return super().run_parent(run_id)

    @staticmethod
    def _claim(run_id: str, res: Sequence[Any], at: int, facts: _Facts) -> Claim:
        """The claim a script's reply holds from position ``at`` (see claim_data in lua/lib_flow.lua),
        with the run's facts."""
        f = res[at : at + _CLAIM_FIELDS]
        outputs = {_s(res[i]): codec.loads(res[i + 1]) for i in range(at + _CLAIM_FIELDS, len(res), 2)}
        workflow, digest, inputs, code, signature, _parent = facts
        return Claim(
            run_id,
            _s(f[0]),
            int(f[1]),
            workflow,
            digest,
            inputs,
            outputs,
            map_of=_s(f[5]) or None,
            item=codec.loads(f[6]),
            wake_at=float(f[7]) if f[7] else None,
            run_priority=int(f[8] or 0),
            code=code,
            signature=signature,
            gather=int(f[11]) if f[11] else None,
        )

    def _progress(self, run_id: str, res: Sequence[Any]) -> Progress:
        """Parse a transition's reply: {accepted, finished, n_ok, failed, #messages,
        messages..., continuation claim...}."""
        if not res or int(res[0]) == 0:
            return Progress(False)
        finished = RunStatus(_s(res[1])) if res[1] else None
        admit = finished is not None and self._finished(run_id, finished, res[2], res[3])
        end = 5 + 4 * int(res[4])
        claim = self._claim(run_id, res, end, self._run_facts(run_id)) if len(res) > end else None
        return Progress(True, self._ready(run_id, res[5:end]), finished, claim, admit)

    def _transition(
        self,
        name: str,
        run_id: str,
        node_id: str,
        token: str,
        args: Sequence[Any],
        logs: Sequence[dict[str, Any]],
    ) -> Any:
        """Run a node transition script. Its ARGV: node, token, ``args``, the number of log
        entries, the entries (see lua/lib.lua)."""
        entries = self._logs(logs)
        return self._call(name, run_id, node_id, token, *args, len(entries), *entries)

    @_guard
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
        entries = self._logs(logs)  # a node's hot path: _transition spelled out
        res = self._wire.call(
            "complete",
            self._keys(run_id),
            node_id,
            token,
            output_json,
            self._retention_ms,
            next_token or "",
            repr(float(lease)),
            len(entries),
            *entries,
        )
        return self._progress(run_id, res)

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
        progress = self._progress(
            run_id, self._transition("await_child", run_id, node_id, token, (child_run_id,), logs)
        )
        if progress.accepted:
            self.note_child(run_id, node_id, child_run_id)
        return progress

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
        args = ("", self._retention_ms, window, len(items))
        return self._progress(run_id, self._transition("expand", run_id, node_id, token, args, logs))

    @_guard
    def map_results(self, run_id: str, node_id: str, first: int, count: int) -> list[str]:
        fields = [f"{node_id}[{i}]" for i in range(first, first + count)]
        keys = self._keys(run_id)
        pipe = self.r.pipeline(transaction=False)
        for index in (NS, OUT, ERR):
            pipe.hmget(keys[index], fields)
        states, outs, errs = pipe.execute()
        results = []
        for state, out, err in zip(states, outs, errs, strict=True):
            value = out if state is not None and _s(state).startswith("completed|") else err
            results.append(_s(value) if value is not None else "null")
        return results

    @_guard
    def cancel_node(self, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]) -> Progress:
        args = ("", self._retention_ms)
        return self._progress(run_id, self._transition("cancel_node", run_id, node_id, token, args, logs))


def _eviction_policy(client: redis.Redis) -> str | None:
    """The server's maxmemory-policy (CONFIG GET, else INFO when CONFIG is not allowed)."""
    try:
        found = client.config_get("maxmemory-policy")
        return str(found.get("maxmemory-policy")) if found else None
    except RedisError:  # managed Redis often disables CONFIG
        info = client.info("memory")
        policy = info.get("maxmemory_policy")
        return None if policy is None else str(policy)
