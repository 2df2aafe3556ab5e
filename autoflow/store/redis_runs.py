"""Redis store, runs coming to life: definitions and blobs, creation (journaled,
idempotent, in one batch with the admission), admission and start. A client's own new run
starts in the round trip that also sends its first queue messages."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from autoflow import codec
from autoflow.store.base import NewRun, NodeSeed, QueueCommands, Ready
from autoflow.store.redis_control import RedisControl, admission_score
from autoflow.store.redis_lane import lost_script
from autoflow.store.redis_reads import _guard, _s
from autoflow.store.rules import message_priority

__all__ = ["RedisRuns"]

_T = TypeVar("_T")

#: Runs created per round trip by :meth:`RedisRuns.create_many_and_admit`.
_BATCH = 500


class RedisRuns(RedisControl):
    """Run creation, admission and start of :class:`~autoflow.store.redis.RedisStore`."""

    ns: str
    _facts_lock: threading.Lock
    _topologies: dict[str, tuple[tuple[NodeSeed, ...], tuple[str, list[Any], str]]]  # see _topology

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
        return run_id, self._start_many(admitted, {run_id: run} if run_id in admitted else {}, nodes, enqueue)

    @_guard
    def create_many_and_admit(
        self, runs: Sequence[NewRun], nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[list[str], list[Ready]]:
        """:meth:`create_and_admit` for many runs of one definition: per batch of
        ``_BATCH`` runs, their creations and one admission in one round trip, the admitted
        runs' starts (with the messages of the new ones' roots, given ``enqueue``) in one
        more."""
        ids: list[str] = []
        ready: list[Ready] = []
        for first in range(0, len(runs), _BATCH):
            batch = runs[first : first + _BATCH]

            def build(batch: Sequence[NewRun] = batch) -> tuple[list[str], list[tuple[Any, ...]]]:
                made = [self._create_commands(run, nodes) for run in batch]
                return [run_id for run_id, _ in made], [c for _, commands in made for c in commands]

            made, admitted = self._send_creation(build, limit)
            ids += made
            new = {run_id: run for run_id, run in zip(made, batch, strict=True)}
            ready += self._start_many(admitted, {r: new[r] for r in admitted if r in new}, nodes, enqueue)
        return ids, ready

    def _start_many(
        self, run_ids: Sequence[str], new: dict[str, NewRun], nodes: Sequence[NodeSeed], enqueue: QueueCommands | None
    ) -> list[Ready]:
        """Start admitted runs in one round trip; the ones in ``new`` (created here, of
        ``nodes``) send their roots' messages in it too (as in :meth:`create_and_admit`: a
        message a start did not confirm is dropped at its claim). Returns the messages
        still to be sent."""
        if not run_ids:
            return []
        guess = [
            Ready(run_id, n.id, 1, message_priority(new[run_id].priority, n.priority))
            for run_id in run_ids
            if run_id in new
            for n in nodes
            if not n.parents
        ]
        sent = (enqueue(guess, self._wire.server) if enqueue is not None and guess else None) or []
        starts = [self._wire.command("start", self._keys(run_id), []) for run_id in run_ids]
        replies = self._wire.send_many([*starts, *sent])
        queued = bool(sent) and not any(isinstance(q, Exception) for q in replies[len(starts) :])
        guessed = set(guess) if queued else set()  # not queued after all: the caller sends them
        ready: list[Ready] = []
        for run_id, reply in zip(run_ids, replies, strict=False):  # the queue replies follow
            if isinstance(reply, Exception):  # e.g. the server lost the functions: start as usual
                if not lost_script(reply):
                    raise reply
                started = self._start(run_id)  # loads the functions or script again itself
            else:
                started = self._started(run_id, reply)
            ready += [r for r in started if r not in guessed]
        return ready

    def _create(self, run: NewRun, nodes: Sequence[NodeSeed], admit: int | None) -> tuple[str, list[str]]:
        """Create (see :meth:`create_run`); with ``admit``, the admission runs in the same
        batch: the ids of the runs it admitted."""
        return self._send_creation(lambda: self._create_commands(run, nodes), admit)

    def _send_creation(
        self, build: Callable[[], tuple[_T, list[tuple[Any, ...]]]], admit: int | None
    ) -> tuple[_T, list[str]]:
        """Send the creation commands ``build`` makes (all idempotent), then, with ``admit``,
        the admission in the same batch; returns what ``build`` made and the ids of the
        runs admitted. After a server lost the scripts, load them and send the creation
        again, built anew: if the admission had run, its runs (picked from index entries
        whose creation failed: created now) are not put back in the admission queue, else
        it goes again. Raises the first error reply."""

        def admission() -> list[tuple[Any, ...]]:  # named as the server runs it now (FCALL or EVALSHA)
            return [self._wire.command("admit", self._admit_keys(), [admit])] if admit is not None else []

        made, commands = build()
        replies = self._wire.send_many(commands + admission())
        if any(lost_script(r) for r in replies):  # e.g. the server restarted: load them and go again
            self._wire.reload("create", "admit")
            made, commands = build()
            if admit is not None and not isinstance(replies[-1], Exception):  # the admission ran
                admitted = replies[-1]
                picked = [_s(i) for i in admitted[1:]]
                if picked:  # out of the admission queue again (the indexes sent again put them back)
                    commands += [("ZREM", self._pending(False), *picked), ("ZREM", self._pending(True), *picked)]
                replies = [*self._wire.send_many(commands), admitted]
            else:
                replies = self._wire.send_many(commands + admission())
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return made, [_s(i) for i in replies[-1][1:]] if admit is not None else []

    def _create_commands(self, run: NewRun, nodes: Sequence[NodeSeed]) -> tuple[str, list[tuple[Any, ...]]]:
        """The run's id and the commands creating it: journal entry, creation (unless its
        id exists), indexes, journal entry removed."""
        if run.idempotency_key:  # one key names one run: its id comes from the key
            run = dataclasses.replace(run, id=codec.keyed_run_id(run.idempotency_key))
        topology = self._topology(run.digest, nodes)
        fields: dict[str, Any] = {
            # First the fields every transition reads and writes (lua/lib.lua, load_run):
            # Redis searches a small hash from its start. "cancel" is "1" once requested.
            "status": "pending",
            "cancel": "0",
            "remaining": len(nodes),
            "running": 0,
            "queued": 0,
            "n_ok": 0,
            "failed": 0,
            "priority": run.priority,
            "topo_id": topology[2],
            "id": run.id,
            "workflow": run.workflow,
            "digest": run.digest,
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
        return run.id, commands

    def _topology(self, digest: str, nodes: Sequence[NodeSeed]) -> tuple[str, list[Any], str]:
        """The roots, create.lua's node arguments (count, ids, TOPO entries) and their hash
        (``topo_id``: runs with the same one share Redis's parsed entries, see lua/lib.lua)
        of a run's seeds: the same for every run of a definition, so formatted once per
        digest (and checked to come from the same seeds: the planner hands the same object
        every time, a sub-workflow's equal ones)."""
        cached = self._topologies.get(digest)
        if cached is not None and (cached[0] is nodes or cached[0] == tuple(nodes)):
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
        ids = [n.id for n in nodes]
        made = (
            ",".join(n.id for n in nodes if not n.parents),
            [len(nodes), *ids, *topos],
            hashlib.sha256("\n".join([*ids, *topos]).encode()).hexdigest()[:32],
        )
        with self._facts_lock:
            while len(self._topologies) >= 256:  # the oldest definition goes
                self._topologies.pop(next(iter(self._topologies)))
            self._topologies[digest] = (nodes if isinstance(nodes, tuple) else tuple(nodes), made)
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
            ("ZADD", self._pending(child), "NX", admission_score(priority, created_at), run_id),
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
