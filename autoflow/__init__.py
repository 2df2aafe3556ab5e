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

from autoflow.client import Client, Run
from autoflow.config import Settings
from autoflow.context import Context
from autoflow.errors import (
    AutoflowError,
    BackendError,
    InputError,
    NodeCancelled,
    NotFoundError,
    OutputError,
    RunCancelled,
    RunFailed,
    RunTimeout,
    WorkflowError,
)
from autoflow.flow import delay
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
    TriggerRule,
)
from autoflow.node import Backoff, Node, NodeOptions, node
from autoflow.registry import Registry, default_registry
from autoflow.workflow import Workflow, workflow

__version__ = "0.1.0"

__all__ = [
    "AutoflowError",
    "BackendError",
    "Backoff",
    "Client",
    "Context",
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
    "QueueCounts",
    "QueueStats",
    "Registry",
    "Run",
    "RunCancelled",
    "RunFailed",
    "RunInfo",
    "RunStatus",
    "RunTimeout",
    "Settings",
    "TriggerRule",
    "Workflow",
    "WorkflowError",
    "default_registry",
    "delay",
    "node",
    "workflow",
]
