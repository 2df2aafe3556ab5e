"""Status enums and the snapshots the client returns (pydantic models).

These are plain data: the store builds them, the client, CLI and widgets render them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorInfo",
    "LogEntry",
    "LogLevel",
    "NodeInfo",
    "NodeStatus",
    "QueueCounts",
    "QueueStats",
    "RunInfo",
    "RunStatus",
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
    by the store; ``waiting`` and ``active`` are the current numbers.
    """

    workflow: QueueCounts = Field(default_factory=QueueCounts)
    node: QueueCounts = Field(default_factory=QueueCounts)
