"""Status enums and the snapshots the client returns (pydantic models).

These are plain data: the store builds them, the client, CLI and widgets render them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CatchupPolicy",
    "DbTriggerInfo",
    "ErrorInfo",
    "LogEntry",
    "LogLevel",
    "NodeInfo",
    "NodeStatus",
    "OverlapPolicy",
    "QueueCounts",
    "QueueStats",
    "RunInfo",
    "RunStatus",
    "ScheduleEvent",
    "ScheduleEventKind",
    "ScheduleInfo",
    "TriggerRule",
]


class RunStatus(str, enum.Enum):
    """The six states of a run (the seed's)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _RUN_FINISHED

    def __str__(self) -> str:
        return self.value


_RUN_FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class NodeStatus(str, enum.Enum):
    """The states of one node of a run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"  # a durable delay or a rate-limit pause: holds no worker
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _NODE_FINISHED

    def __str__(self) -> str:
        return self.value


_NODE_FINISHED = frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED})


class TriggerRule(str, enum.Enum):
    """When a node may run, given its parents' outcomes (Airflow's names).

    ``all_success`` (default): no parent failed and at least one completed (a parent on a
    branch not taken does not block). ``all_done``: every parent finished, however.
    ``one_success`` / ``one_failed``: as soon as one parent completed / failed.
    ``all_failed``: every parent failed. ``none_failed``: no parent failed (all may be skipped).
    """

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ALL_FAILED = "all_failed"
    NONE_FAILED = "none_failed"

    def __str__(self) -> str:
        return self.value


class LogLevel(str, enum.Enum):
    """Log levels of run logs (the seed's four)."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class ErrorInfo(BaseModel):
    """A failure as stored: original exception type, message and traceback text."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    traceback: str = ""
    node_id: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


class NodeInfo(BaseModel):
    """The state of one node of a run."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str = ""
    status: NodeStatus
    attempt: int = 0
    stall_count: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: ErrorInfo | None = None
    items_total: int | None = None
    items_done: int = 0
    child_run_id: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds between start and finish of the last attempt, if both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


_Model = TypeVar("_Model", bound=BaseModel)
_FIELD_COUNTS: dict[type[BaseModel], int] = {}


def trusted(cls: type[_Model], **values: Any) -> _Model:
    """An instance of ``cls`` made from values the engine itself wrote, every field given
    and already of its type: nothing is validated. ``model_construct`` promises the same but
    walks the model's fields on every call (~11 µs for a ``NodeInfo``, against ~3 here),
    and a store reading a 1,000-node run makes 1,000 of them. Checked against
    ``model_construct`` once, at import: with a pydantic that lays models out otherwise,
    or when a field is left out, it is ``model_construct``."""
    fields = _FIELD_COUNTS.get(cls)
    if fields is None:
        fields = _FIELD_COUNTS[cls] = len(cls.model_fields)  # (a slow class property)
    if not _TRUSTED_LAYOUT or len(values) != fields:
        return cls.model_construct(**values)
    return _laid_out(cls, values)


def _laid_out(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """An instance of ``cls`` with ``values`` as its fields, laid out as pydantic 2 does."""
    made = cls.__new__(cls)
    object.__setattr__(made, "__dict__", values)
    object.__setattr__(made, "__pydantic_fields_set__", set(values))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def _trusted_layout() -> bool:
    values: dict[str, Any] = {
        "id": "a", "type": "t", "status": NodeStatus.COMPLETED, "attempt": 1, "stall_count": 0,
        "started_at": None, "finished_at": None, "output": {"x": [1]}, "error": None,
        "items_total": None, "items_done": 0, "child_run_id": None,
    }  # fmt: skip
    try:
        made, expected = _laid_out(NodeInfo, dict(values)), NodeInfo.model_construct(**values)
        return (
            made == expected
            and made.model_dump() == expected.model_dump()
            and made.model_fields_set == expected.model_fields_set
            and repr(made) == repr(expected)
        )
    except Exception:  # any surprise means: use model_construct
        return False


_TRUSTED_LAYOUT = _trusted_layout()


class RunInfo(BaseModel):
    """A snapshot of a run: status, timestamps, per-node state, error and output.

    Example::

        info = run.status()
        info.status            # RunStatus.RUNNING
        info.nodes["parse"]    # NodeInfo(status=NodeStatus.COMPLETED, ...)
        info.progress          # (finished nodes, total nodes)
    """

    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    definition_hash: str = ""
    status: RunStatus
    priority: int = 0
    inputs: dict[str, Any] = Field(default_factory=dict)
    output: Any = None
    error: ErrorInfo | None = None
    user_id: str | None = None
    organization_id: str | None = None
    trigger: str = "manual"
    trigger_data: Any = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    nodes: dict[str, NodeInfo] = Field(default_factory=dict)
    workflow_id: str | None = None  # the stored workflow (by id) this run executes, if any
    workflow_version: int | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def progress(self) -> tuple[int, int]:
        """(finished nodes, total nodes)."""
        done = sum(1 for n in self.nodes.values() if n.status.finished)
        return done, len(self.nodes)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def summary(self) -> str:
        """One line: ``<Run id workflow status 3/5 nodes>``."""
        done, total = self.progress
        return f"<Run {self.id} {self.workflow} {self.status.value} {done}/{total} nodes>"


class LogEntry(BaseModel):
    """One structured log line of a run (the seed's fields)."""

    model_config = ConfigDict(frozen=True)

    id: int
    timestamp: datetime
    level: LogLevel
    message: str
    node_id: str | None = None
    data: dict[str, Any] | None = None

    def format(self) -> str:
        node = f" [{self.node_id}]" if self.node_id else ""
        extra = f" {self.data}" if self.data else ""
        return f"{self.timestamp:%H:%M:%S.%f}"[:-3] + f" {self.level.value:5}{node} {self.message}{extra}"


class QueueCounts(BaseModel):
    """Counts of one queue: waiting, active, completed, failed."""

    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0


class QueueStats(BaseModel):
    """The seed's queue statistics: one :class:`QueueCounts` per queue.

    ``completed`` and ``failed`` count finished runs (and their nodes) still retained
    by the store; ``waiting`` and ``active`` are the current numbers. ``workflow.active``
    counts the runs holding an admission slot (``WORKFLOW_CONCURRENCY``; a sub-workflow run
    rides on its parent's and counts too): started runs, paused or not. On Redis a run that
    just ended keeps its slot until its bookkeeping (its worker's next round trip, or the
    reaper's if that worker died), and counts as active and as completed/failed until then.
    """

    workflow: QueueCounts = Field(default_factory=QueueCounts)
    node: QueueCounts = Field(default_factory=QueueCounts)


# -- schedules and database triggers (autoflow.triggers) ------------------------------------


class OverlapPolicy(str, enum.Enum):
    """What a schedule does when a slot comes while its previous run is still going.

    ``skip`` (default): the slot is skipped and recorded. ``buffer_one``: it waits and
    starts when the running one ends (one slot at most; later ones are skipped).
    ``allow_all``: it starts anyway. ``cancel_other``: the running run is cancelled, then
    the new one starts.
    """

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW_ALL = "allow_all"
    CANCEL_OTHER = "cancel_other"

    def __str__(self) -> str:
        return self.value


class CatchupPolicy(str, enum.Enum):
    """Which late slots fire after downtime (a slot is late past a 60 s grace).

    ``none`` (default): no late slot fires; each is recorded as missed. ``latest``: the
    most recent late slot within the catch-up window fires. ``all``: every late slot
    within the window fires, oldest first.
    """

    NONE = "none"
    LATEST = "latest"
    ALL = "all"

    def __str__(self) -> str:
        return self.value


class ScheduleEventKind(str, enum.Enum):
    """What happened to a slot of a schedule."""

    FIRED = "fired"
    SKIPPED = "skipped"  # overlap policy: the previous run was still going
    BUFFERED = "buffered"  # buffer_one: waits for the previous run
    MISSED = "missed"  # late after downtime, and the catch-up policy left it out
    ERROR = "error"  # the run could not be started (e.g. its workflow is not registered)

    def __str__(self) -> str:
        return self.value


class ScheduleEvent(BaseModel):
    """One recorded slot of a schedule (the last ones are kept in ``ScheduleInfo.events``)."""

    model_config = ConfigDict(frozen=True)

    kind: ScheduleEventKind
    slot: datetime | None
    at: datetime
    run_id: str | None = None
    message: str = ""


class ScheduleInfo(BaseModel):
    """A schedule: what to run, when (cron or interval, time zone, jitter), its policies,
    and its state as the ticker left it. Times are UTC.

    Example::

        s = client.schedules.create("etl", cron="0 9 * * MON", timezone="America/Sao_Paulo")
        s.next_fire_at          # datetime in UTC
        s.events[-1]            # ScheduleEvent(kind=fired, slot=..., run_id=...)
    """

    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    cron: str | None = None
    interval: float | None = None  # seconds, elapsed (UTC) time
    anchor: datetime | None = None  # intervals count from here (default: the epoch)
    timezone: str = "UTC"
    jitter: float = 0.0
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup: CatchupPolicy = CatchupPolicy.NONE
    catchup_window: float = 86400.0
    inputs: dict[str, Any] = Field(default_factory=dict)
    slot_input: str | None = None  # a workflow input that receives the slot (ISO text)
    priority: int = 0
    user_id: str | None = None
    organization_id: str | None = None
    paused: bool = False
    note: str = ""
    source: str = "api"  # "api" (created at run time) or "decorator" (@af.workflow(schedule=...))
    created_at: datetime
    updated_at: datetime
    next_slot: datetime | None = None
    next_fire_at: datetime | None = None  # next_slot plus its jitter
    last_slot: datetime | None = None
    last_fired_at: datetime | None = None
    last_run_id: str | None = None
    buffered_slot: datetime | None = None
    active_runs: list[str] = Field(default_factory=list)
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    events: list[ScheduleEvent] = Field(default_factory=list)
    version: int = 0


class DbTriggerInfo(BaseModel):
    """A database-change trigger: a table watched through an outbox, one run per change.

    Example::

        t = client.db_triggers.activate("on_order", kind="postgres", table="orders",
                                        url="postgresql://app@db/shop", event_input="event")
        t.events, t.last_event_id
    """

    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    kind: str  # "postgres" or "sqlite"
    url: str | None = None  # without a password (see url_env)
    url_env: str | None = None  # name of an environment variable holding the URL
    table: str
    schema_name: str = "public"
    operations: list[str] = Field(default_factory=lambda: ["INSERT", "UPDATE", "DELETE"])
    inputs: dict[str, Any] = Field(default_factory=dict)
    event_input: str | None = None  # a workflow input that receives the event
    priority: int = 0
    user_id: str | None = None
    organization_id: str | None = None
    max_row_bytes: int = 8000
    poll_interval: float = 1.0
    active: bool = True
    epoch: str = ""  # new at each activation: event ids of an older outbox never collide
    created_at: datetime
    updated_at: datetime
    last_event_id: int | None = None
    events: int = 0
    last_error: str | None = None
    version: int = 0
