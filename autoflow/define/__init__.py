"""Defining workflows: ``@node`` functions composed by ``@workflow`` into a validated DAG.

Inside this package imports run one way, bottom to top: ``registry`` and ``schema``,
``node``, ``definition``, ``building``, ``delay``, ``workflow``. Nothing here knows about
stores, queues or widgets.
"""

from autoflow.define.delay import delay
from autoflow.define.node import Backoff, Node, NodeOptions, node
from autoflow.define.registry import Registry, default_registry
from autoflow.define.workflow import Workflow, workflow

__all__ = [
    "Backoff",
    "Node",
    "NodeOptions",
    "Registry",
    "Workflow",
    "default_registry",
    "delay",
    "node",
    "workflow",
]
