"""autoflow: decorator-defined workflows as networkx DAGs, run durably on Huey.

Example::

    import autoflow as af

    @af.node
    def double(x: int) -> int:
        return 2 * x

    @af.workflow
    def twice(x: int):
        return double(double(x))

    client = af.Client()                  # embedded SQLite, worker threads in-process
    client.execute(twice, x=5).result()   # 20
"""

from autoflow import nodes as nodes  # the built-in node library (registers the seed's node types)
from autoflow import notebook as notebook  # installs the display hooks of runs (live panel, HTML)
from autoflow import triggers as triggers  # schedules, database triggers, af.triggers.preview
from autoflow.client import Client, Run
from autoflow.config import Settings
from autoflow.context import Context
from autoflow.define import Backoff, Node, NodeOptions, Registry, Workflow, default_registry, delay, node, workflow
from autoflow.errors import (
    AutoflowError,
    BackendError,
    ConfigError,
    ConflictError,
    InputError,
    NodeCancelled,
    NotFoundError,
    OutputError,
    RunCancelled,
    RunFailed,
    RunTimeout,
    WorkflowError,
)
from autoflow.models import (
    CatchupPolicy,
    DbTriggerInfo,
    ErrorInfo,
    LogEntry,
    LogLevel,
    NodeInfo,
    NodeStatus,
    OverlapPolicy,
    QueueCounts,
    QueueStats,
    RunInfo,
    RunStatus,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleInfo,
    TriggerRule,
)

__version__ = "0.1.0"

__all__ = [
    "AutoflowError",
    "BackendError",
    "Backoff",
    "CatchupPolicy",
    "Client",
    "ConfigError",
    "ConflictError",
    "Context",
    "DbTriggerInfo",
    "ErrorInfo",
    "InputError",
    "LogEntry",
    "LogLevel",
    "Node",
    "NodeCancelled",
    "NodeInfo",
    "NodeOptions",
    "NodeStatus",
    "NotFoundError",
    "OutputError",
    "OverlapPolicy",
    "QueueCounts",
    "QueueStats",
    "Registry",
    "Run",
    "RunCancelled",
    "RunFailed",
    "RunInfo",
    "RunStatus",
    "RunTimeout",
    "ScheduleEvent",
    "ScheduleEventKind",
    "ScheduleInfo",
    "Settings",
    "TriggerRule",
    "Workflow",
    "WorkflowError",
    "default_registry",
    "delay",
    "node",
    "workflow",
]
