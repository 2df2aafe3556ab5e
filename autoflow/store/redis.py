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

import base64
import dataclasses
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis
from redis.exceptions import RedisError

from autoflow import codec
from autoflow.errors import BackendError
from autoflow.models import ErrorInfo, RunStatus
from autoflow.store.base import Claim, NewRun, NodeSeed, Progress, QueueCommands, Ready, map_window
from autoflow.store.catalog_redis import RedisCatalog
from autoflow.store.redis_control import RedisControl
from autoflow.store.redis_lane import RedisLane, lost_script
from autoflow.store.redis_reads import ERR, NS, OUT, RUN_KEYS, _guard, _s
from autoflow.store.rules import message_priority

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
#: The fixed fields of a claim in a script's reply (see claim_data in lua/lib.lua).
_CLAIM_FIELDS = 13


class _Facts(NamedTuple):
    """What a worker remembers of a run it claimed a node of: immutable for the run's life."""

    workflow: str
    digest: str
    inputs: Any
    code: str | None
    signature: str | None
    parent: bool  # a sub-workflow run: its end settles a node of its parent


class RedisStore(RedisControl, RedisCatalog):
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
        self._topologies: dict[int, tuple[Sequence[NodeSeed], tuple[str, list[Any]]]] = {}  # see _topology
        self._wire = RedisLane(client, _RUN_SCRIPTS, _GLOBAL_SCRIPTS)  # the hot path's connections and Lua
        self._scripts = self._wire.scripts

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
        return self._create(run, nodes, None)[0]

    @_guard
    def create_and_admit(
        self, run: NewRun, nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[str, list[Ready]]:
        """:meth:`create_run` with the admission in the same round trip (a client's
        execute), then the admitted runs started. With ``enqueue``, the new run starts
        in one more round trip that also sends the messages of its roots: the ones a start
        makes ready (a message the start did not confirm is dropped at its claim)."""
        run_id, admitted = self._create(run, nodes, limit)
        others = [_s(i) for i in admitted[1:] if _s(i) != run_id]
        ready = [r for other in others for r in self._start(other)]
        if len(others) == len(admitted) - 1:  # the new run was not admitted (or found)
            return run_id, ready
        guess = [Ready(run_id, n.id, 1, message_priority(run.priority, n.priority)) for n in nodes if not n.parents]
        sent = enqueue(guess) if enqueue is not None else None
        if not sent:
            return run_id, ready + self._start(run_id)
        start = self._wire.command("start", self._keys(run_id), [])
        reply = self._wire.send_many([start, *sent])[0]
        if isinstance(reply, Exception):  # e.g. the server lost the functions: start as usual
            if not lost_script(reply):
                raise reply
            return run_id, ready + self._start(run_id)
        started = self._started(run_id, reply)
        return run_id, ready + [r for r in started if r not in guess]

    def _create(self, run: NewRun, nodes: Sequence[NodeSeed], admit: int | None) -> tuple[str, list[Any]]:
        """Create (see :meth:`create_run`); with ``admit``, the admission script's reply
        follows in the same batch."""
        if run.idempotency_key:  # one key names one run: its id comes from the key
            run = dataclasses.replace(run, id=codec.keyed_run_id(run.idempotency_key))
        topology = self._topology(nodes)
        fields: dict[str, Any] = {
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
            "roots": topology[0],
            "parent_run": run.parent_run_id or "",
            "parent_node": run.parent_node_id or "",
            "workflow_id": run.workflow_id or "",
            "workflow_version": run.workflow_version or "",
        }
        keys = self._keys(run.id)
        args = [len(fields) * 2, *(x for pair in fields.items() for x in pair), *topology[1]]
        child = run.parent_run_id is not None
        commands: list[tuple[Any, ...]] = [("ZADD", self._g("creating"), run.created_at, run.id)]
        commands.append(self._wire.command("create", keys, args))
        commands += self._index_commands(run.id, run.workflow, run.priority, run.created_at, child)
        if run.organization_id:  # the organization's history index (run queries by tenant)
            commands.append(("ZADD", self._g(f"org:{run.organization_id}"), "NX", run.created_at, run.id))
        if admit is not None:
            commands.append(self._wire.command("admit", self._admit_keys(), [admit]))
        replies = self._wire.send_many(commands)
        if any(lost_script(r) for r in replies):  # e.g. the server restarted: load them and go again
            self._wire.reload("create", "admit")
            commands[1] = self._wire.command("create", keys, args)
            replies = self._wire.send_many(commands)  # every command is idempotent
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return run.id, [] if admit is None else replies[-1]

    def _topology(self, nodes: Sequence[NodeSeed]) -> tuple[str, list[Any]]:
        """The roots and create.lua's node arguments (count, ids, TOPO entries) of a run's
        seeds: the same for every run of a definition, so formatted once per seeds object
        (the planner hands the same one to every run of a digest)."""
        cached = self._topologies.get(id(nodes))
        if cached is not None and cached[0] is nodes:
            return cached[1]
        topos = [
            "|".join(
                (
                    n.rule,
                    str(n.priority),
                    f"{n.when[0]}:{int(n.when[1])}" if n.when else "",
                    str(len(n.parents)),
                    ",".join(n.parents),
                    ",".join(n.children),
                    ",".join(n.item_parents) if n.item_parents is not None else "-",
                    n.type,
                )
            )
            for n in nodes
        ]
        made = (",".join(n.id for n in nodes if not n.parents), [len(nodes), *(n.id for n in nodes), *topos])
        with self._facts_lock:
            if len(self._topologies) > 256:
                self._topologies.clear()
            self._topologies[id(nodes)] = (nodes, made)
        return made

    def _pending(self, child: bool) -> str:
        """The admission queue: sub-workflow runs wait apart, admitted whatever the limit
        (their parent already holds a slot; waiting for another would deadlock)."""
        return self._g("pending_sub" if child else "pending")

    def _index(self, pipe: Any, run_id: str, workflow: str, priority: int, created_at: float, child: bool) -> None:
        """Queue the global index updates of a created run on ``pipe`` (see
        :meth:`_index_commands`)."""
        for command in self._index_commands(run_id, workflow, priority, created_at, child):
            pipe.execute_command(*command)

    def _index_commands(
        self, run_id: str, workflow: str, priority: int, created_at: float, child: bool
    ) -> list[tuple[Any, ...]]:
        """The global index updates of a created run (all idempotent: a run found again by
        its key keeps its place), then the removal of its journal entry."""
        return [
            ("ZADD", self._pending(child), "NX", -priority, run_id),
            ("ZADD", self._g("runs"), "NX", created_at, run_id),
            ("ZADD", self._g(f"wf:{workflow}"), "NX", created_at, run_id),
            ("ZREM", self._g("creating"), run_id),
        ]

    def _ready(self, run_id: str, flat: Sequence[Any]) -> list[Ready]:
        out = []
        for i in range(0, len(flat), 4):
            eta = _s(flat[i + 3])
            out.append(Ready(run_id, _s(flat[i]), int(flat[i + 1]), int(flat[i + 2]), float(eta) if eta else None))
        return out

    @_guard
    def admit(self, limit: int) -> list[Ready]:
        return self._start_admitted(self._eval("admit", self._admit_keys(), limit))

    def _admit_keys(self) -> list[str]:
        return [self._g("pending"), self._g("active"), self._g("active_sub"), self._pending(True)]

    def _start_admitted(self, reply: Sequence[Any]) -> list[Ready]:
        """Start the runs an admission picked (its reply: {#sub-workflow runs, ids...})."""
        ready: list[Ready] = []
        for run_id in reply[1:]:
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
        return self._started(run_id, self._call("start", run_id))

    def _started(self, run_id: str, res: Sequence[Any]) -> list[Ready]:
        """The messages of a run's start (``res``: start.lua's reply)."""
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
        """The claim a script's reply holds from position ``at`` (see claim_data in lib.lua),
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
        entries = [codec.dumps(r) for r in logs]  # a node's hot path: _transition spelled out
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
