"""The store protocol: the source of truth for runs, nodes and logs.

Huey only carries ``(run_id, node_id, attempt)``; everything else lives here. Each
state transition is one atomic step (a SQLite transaction, a Redis Lua script) and costs
O(out-degree of the node), never a scan of the whole graph.

Fencing: a node is claimed with a fresh ``token``; completing or failing it is accepted
only with the token of the current claim, so a worker whose lease expired (and whose
node was handed to another worker) cannot write a second result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoflow import codec
from autoflow.models import ErrorInfo, LogEntry, LogLevel, QueueStats, RunInfo, RunStatus
from autoflow.store.catalog import Catalog

__all__ = [
    "CRASH_MESSAGE",
    "MAP_WINDOW",
    "Claim",
    "EngineRecord",
    "HeartbeatResult",
    "NewRun",
    "NodeSeed",
    "Progress",
    "QueueCommands",
    "Ready",
    "Store",
    "check_tokens",
    "child_token",
    "crash_error",
    "engine_log",
    "log_text",
    "map_window",
]


@dataclass(frozen=True)
class NewRun:
    """A run to create: everything known at ``execute`` time."""

    id: str
    workflow: str
    digest: str
    inputs: dict[str, Any]
    output: Any
    created_at: float
    priority: int = 0
    user_id: str | None = None
    organization_id: str | None = None
    trigger: str = "manual"
    trigger_data: Any = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    code: str | None = None  # content hash of the code shipped with the run (ship_code)
    signature: str | None = None  # HMAC of what the run may do (see engine/signing.py)
    workflow_id: str | None = None  # the stored workflow (catalog) this run executes, if any
    workflow_version: int | None = None


@dataclass(frozen=True)
class NodeSeed:
    """The static part of a node of one run: its place in the graph."""

    id: str
    type: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    rule: str = "all_success"
    priority: int = 0
    when: tuple[str, bool] | None = None  # (condition node, value it must return)
    item_parents: tuple[str, ...] | None = None  # .map: the parents its items read (not the list)


@dataclass(frozen=True)
class Ready:
    """A node message to send: run, node, attempt, queue priority, optional eta (unix s)."""

    run_id: str
    node_id: str
    attempt: int
    priority: int = 0
    eta: float | None = None


class EngineRecord(dict[str, Any]):
    """A log record made by :func:`engine_log`."""

    __slots__ = ()

    def json(self) -> str:
        """Its JSON text: formatted as is where its words need no escaping (one is written
        per node: the encoder took three times as long), else encoded."""
        message, node_id = self["message"], self["node_id"]
        if _plain(message) and (node_id is None or _plain(node_id)):
            node = "null" if node_id is None else f'"{node_id}"'
            return f'{{"ts":{self["ts"]!r},"level":"{self["level"]}","message":"{message}","node_id":{node}}}'
        return codec.dumps(self)


def _plain(text: str) -> bool:
    """Text that JSON holds as is (nothing to escape)."""
    return text.isprintable() and '"' not in text and "\\" not in text


def engine_log(level: LogLevel, message: str, node_id: str | None = None, now: float | None = None) -> EngineRecord:
    """A log record, as stores take it, of the engine's own words (about a node: its id is
    checked at definition): nothing in it to redact or bound, so it is built as is."""
    return EngineRecord(ts=now or time.time(), level=level.value, message=message, node_id=node_id)


def log_text(record: dict[str, Any]) -> str:
    """A log record's JSON text (as a store keeps it)."""
    return record.json() if type(record) is EngineRecord else codec.dumps(record)


#: The Redis commands that enqueue node messages (``Dispatcher.queue_commands``), given
#: the server (and database) a store would send them to: None when the queue is elsewhere.
#: For a store that can send them with the transition that makes the messages ready.
QueueCommands = Callable[[Sequence[Ready], "tuple[Any, ...]"], "list[tuple[Any, ...]] | None"]


@dataclass  # not frozen: made once per node, a frozen dataclass's __init__ costs 3x as much (~4 us)
class Claim:
    """What a worker gets when it claims a node: enough to run it in one round trip (a
    value: nothing changes it once made).

    ``outputs`` holds what each parent passes on: its output, its error as a dict if it
    failed (for error handlers), or None if it was skipped. For an item of a ``.map``,
    ``map_of`` names the map node and ``item`` is the item. ``wake_at`` is when a
    deferred node asked to be woken."""

    run_id: str
    node_id: str
    attempt: int
    workflow: str
    digest: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    map_of: str | None = None
    item: Any = None
    wake_at: float | None = None
    run_priority: int = 0
    code: str | None = None  # content hash of the run's shipped code, if any
    signature: str | None = None  # the run's signature, checked by workers with a secret
    gather: int | None = None  # a map node whose items are all done: how many to gather


@dataclass  # not frozen: made once per node (see Claim)
class Progress:
    """The outcome of a transition: was it accepted, what to enqueue, did the run end, and
    (a completion asked to continue) the next node, already claimed for the same worker
    (a value: nothing changes it once made)."""

    accepted: bool
    ready: list[Ready] = field(default_factory=list)
    finished: RunStatus | None = None
    claim: Claim | None = None
    #: The run finished and runs may be waiting for its slot (False: the store saw none
    #: pending, so admitting now would find nothing; a run created later admits itself).
    admit: bool = True


@dataclass(frozen=True)
class HeartbeatResult:
    """Runs whose cancellation was requested, and claims that are no longer ours."""

    cancelled: frozenset[str] = frozenset()
    lost: frozenset[tuple[str, str]] = frozenset()


#: At most this many items of one ``.map`` are queued at once (``max_parallel=None`` means
#: "as many as workers can take", not "all 100,000 in one transition"): each finished item
#: queues the next, so a map never holds the store for long.
MAP_WINDOW = 1000


def map_window(items: int, max_parallel: int | None) -> int:
    """How many items of a map of ``items`` are queued when it expands."""
    return min(items, MAP_WINDOW if max_parallel is None else min(max_parallel, MAP_WINDOW))


def child_token(child_run_id: str) -> str:
    """The claim token of a node waiting for sub-workflow run ``child_run_id`` (its owner
    in the store; the Lua scripts know the ``@sub:`` prefix too)."""
    return f"@sub:{child_run_id}"


def check_tokens(tokens: int, count: int) -> None:
    """ValueError unless ``tokens`` can be taken at once from a bucket of ``count`` (1 to
    ``count``: more could never be, all or none)."""
    if not 1 <= tokens <= count:
        raise ValueError(f"tokens must be 1 to {count} (the bucket's size) to be taken at once, not {tokens}")


#: printf-style message of a node given up after too many lost workers (also used in Lua).
CRASH_MESSAGE = "the worker running node '%s' was lost %d time(s); giving up (max_stalls reached)"


def crash_error(node_id: str, stalls: int) -> ErrorInfo:
    return ErrorInfo(type="WorkerCrashed", message=CRASH_MESSAGE % (node_id, stalls), node_id=node_id)


class Store(Catalog, Protocol):
    """What the engine needs from a store. Two implementations: SQLite and Redis.
    (The catalog of stored workflows and run queries is in ``catalog.py``.)

    Unless said otherwise, a missing run makes reads return ``None``/empty and
    transitions return ``Progress(accepted=False)``.
    """

    url: str
    #: Whether ``wait_finished`` returns as soon as the run finishes, whichever process ends
    #: it (a waiter can then block for its whole timeout), rather than only for runs ended
    #: in this process (a waiter looks again soon, then less often).
    finish_wakes_waiters: bool

    def put_definition(self, digest: str, body: str) -> None:
        """Store a workflow definition (JSON text) under its digest; idempotent."""

    def get_definition(self, digest: str) -> str | None:
        """The definition stored under ``digest``, or None."""

    def put_blob(self, key: str, data: bytes) -> None:
        """Store opaque bytes (e.g. shipped code) under ``key``; overwrites."""

    def get_blob(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None."""

    def create_run(self, run: NewRun, nodes: Sequence[NodeSeed]) -> str:
        """Create a pending run and its pending nodes atomically; returns its id. A run
        with an ``idempotency_key`` gets the id ``codec.keyed_run_id(key)``; if that run
        exists (retained), nothing is created and its id is returned: one key, one run,
        even when several clients create it at once."""

    def admit(self, limit: int) -> list[Ready]:
        """Start pending runs, highest priority first, while fewer than ``limit`` runs are
        running; their root nodes become queued and are returned."""

    def create_and_admit(
        self, run: NewRun, nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[str, list[Ready]]:
        """:meth:`create_run` then :meth:`admit` (in one round trip or transaction where
        the store can): the run's id and what the admission made ready and is still to
        be sent. A store that can sends the first messages of the run it just admitted
        itself, with ``enqueue``'s commands, in the round trip that starts it."""

    def create_many_and_admit(
        self, runs: Sequence[NewRun], nodes: Sequence[NodeSeed], limit: int, enqueue: QueueCommands | None = None
    ) -> tuple[list[str], list[Ready]]:
        """:meth:`create_and_admit` for many runs of one definition (``nodes``), in a few
        round trips or transactions for all of them: their ids, in order, and what the
        admissions made ready and is still to be sent."""

    def start_run(self, run_id: str) -> list[Ready]:
        """Start one pending run now, whatever the limit (a sub-workflow run)."""

    def claim(self, run_id: str, node_id: str, attempt: int, token: str, lease: float) -> Claim | None:
        """Queued/retrying → running for this ``attempt``, held by ``token`` for ``lease``
        seconds. None if the message is stale, the run is not running (paused,
        cancelled) or the node is not waiting for this attempt."""

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
        """Running → completed (fenced by ``token``): store the output (JSON text, already
        checked by the caller), settle the children and return those that became ready;
        end the run if nothing is left. With ``next_token``, the first node that became
        ready is claimed at once for the caller (``Progress.claim``, held by that token for
        ``lease`` seconds) instead of being returned as a message: a worker runs a chain
        without a queue round trip per node."""

    def fail(
        self,
        run_id: str,
        node_id: str,
        token: str,
        error: ErrorInfo,
        retry_in: float | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        """Running → retrying (``retry_in`` seconds given: the next attempt is returned
        with that eta, measured on the store's clock) or → failed (children settled as
        failed parents). Fenced by token."""

    def cancel_node(self, run_id: str, node_id: str, token: str, logs: Sequence[dict[str, Any]]) -> Progress:
        """Running → cancelled, after the node stopped because its run was cancelled."""

    def defer(
        self, run_id: str, node_id: str, token: str, until: float, waiting: bool, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        """Running → ``waiting`` (a durable delay, ``wake_at`` remembered) or ``queued`` (a
        rate-limit pause) until ``until``, holding no worker; the same attempt's message is
        returned with that eta."""

    def await_child(
        self, run_id: str, node_id: str, token: str, child_run_id: str, logs: Sequence[dict[str, Any]]
    ) -> Progress:
        """The node waits for sub-workflow run ``child_run_id``, holding no worker and no
        lease; it is then completed or failed with the token ``"@sub:<child_run_id>"``."""

    def expand(
        self,
        run_id: str,
        node_id: str,
        token: str,
        items: Sequence[str],
        max_parallel: int | None,
        logs: Sequence[dict[str, Any]],
    ) -> Progress:
        """A map node got its items (JSON texts): they become ``node[i]``, the first
        ``map_window(len(items), max_parallel)`` queued, each finished item queuing the
        next. Once all are done the map node is queued again and its claim says how many
        results to gather (``Claim.gather``): the worker reads them with :meth:`map_results`
        and completes it. The first failed item fails the map unless its rule is all_done."""

    def map_results(self, run_id: str, node_id: str, first: int, count: int) -> list[str]:
        """The results (JSON texts) of items ``first`` to ``first + count - 1`` of map node
        ``node_id``, in item order: an item's output, or its error if it failed."""

    def heartbeat(self, claims: Sequence[tuple[str, str, str]], lease: float) -> HeartbeatResult:
        """Extend the leases of ``(run_id, node_id, token)`` claims still held; report
        runs being cancelled and claims lost."""

    def append_logs(self, run_id: str, logs: Sequence[dict[str, Any]]) -> None:
        """Append log records (``ts, level, message, node_id, data``) to a run."""

    def cancel_run(self, run_id: str) -> RunStatus | None:
        """Request cancellation: nodes not running become cancelled at once; the run is
        cancelled when no node of it runs any more. Returns the run status after."""

    def pause_run(self, run_id: str) -> RunStatus | None:
        """Pending/running → paused: no node starts until resumed."""

    def resume_run(self, run_id: str) -> list[Ready]:
        """Paused → running (or pending if never admitted); returns queued nodes to send."""

    def run_status(self, run_id: str) -> RunStatus | None:
        """Just the status of a run (cheap), or None."""

    def run_statuses(self, run_ids: Sequence[str]) -> list[RunStatus | None]:
        """:meth:`run_status` of each run, in the order of ``run_ids`` (None: unknown), in
        one read (one round trip; SQLite: one query per 500 ids)."""

    def created_at(self, run_ids: Sequence[str]) -> list[float | None]:
        """When each run was created (unix s; None: unknown), in one read."""

    def run_summaries(self, run_ids: Sequence[str]) -> list[RunInfo | None]:
        """Each run's own fields without its nodes (as :meth:`list_runs` gives them:
        ``nodes`` empty, ``output`` and ``error`` None), in the order of ``run_ids`` (None:
        unknown), in one read (one round trip; SQLite: one query per 500 ids)."""

    def run_parent(self, run_id: str) -> tuple[str, str] | None:
        """``(parent run, parent node)`` of a sub-workflow run (cheap), else None."""

    def get_run(self, run_id: str) -> RunInfo | None:
        """A snapshot of the run with every node, or None."""

    def list_runs(self, workflow: str | None, status: RunStatus | None, limit: int) -> list[RunInfo]:
        """Runs newest first (without per-node detail)."""

    def get_logs(self, run_id: str, since: int = 0, node_id: str | None = None, limit: int = 10_000) -> list[LogEntry]:
        """Log entries with ``id > since``, oldest first."""

    def stats(self) -> QueueStats:
        """Counts of the workflow queue and the node queue."""

    def child_runs(self, run_id: str) -> list[str]:
        """Sub-workflow runs started by nodes of the run."""

    def awaiting_children(self) -> list[tuple[str, str, str]]:
        """``(run_id, node_id, child_run_id)`` of sub-workflow nodes whose child run ended
        but which were not settled yet (the worker that ended the child died)."""

    def take_token(self, key: str, count: int, per: float, *, tokens: int = 1) -> float:
        """Token bucket of ``count`` per ``per`` seconds shared by all workers: take
        ``tokens`` (1 to ``count``, else ValueError) at once, all or none, atomically. 0.0
        if they were taken (the call may go now); else none is taken and the result is the
        seconds until the bucket holds them all (if nobody else takes any meanwhile).
        Taking n at once is taking one n times, except that a refusal spends nothing."""

    def acquire_slot(self, key: str, holder: str, limit: int, lease: float) -> bool:
        """Take one of ``limit`` slots of ``key`` for ``lease`` seconds; False if all are busy."""

    def release_slot(self, key: str, holder: str) -> None:
        """Give a slot back."""

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> None:
        """Extend the slots ``(key, holder)`` of running nodes."""

    def reap(self, now: float, requeue_after: float, max_stalls: int, resend_limit: int | None = None) -> list[Ready]:
        """Recover from lost workers and lost messages: expired leases go back to queued
        (or fail as crashed after ``max_stalls``); queued nodes whose message is older than
        ``requeue_after`` are re-sent, oldest first, at most ``resend_limit`` of them
        (None: all). Returns the messages to send."""

    def count_waiting(self) -> int:
        """How many nodes wait for a message (queued or retrying)."""

    def purge(self, now: float, retention: float) -> int:
        """Delete runs finished more than ``retention`` seconds ago; returns how many."""

    def wait_finished(self, run_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds or until the run may have finished (see
        ``finish_wakes_waiters``). True when the store knows it has finished (the waiter
        need not ask again); False when it may or may not have."""

    def close(self) -> None:
        """Release connections."""
