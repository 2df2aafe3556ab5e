"""Helpers: build a one-node JSON workflow, run it, read what happened."""

from __future__ import annotations

import uuid
from typing import Any

import autoflow as af


def one_node(node_type: str, config: dict[str, Any], options: dict[str, Any] | None = None) -> af.Workflow:
    """A JSON-only workflow of one library node ``n`` whose output is the workflow's."""
    return af.Workflow.from_dict(
        {
            "name": f"t_{uuid.uuid4().hex[:8]}",
            "nodes": [{"id": "n", "type": node_type, "config": config, "options": options or {}}],
            "edges": [],
            "output": "n",
        }
    )


def run(client: af.Client, node_type: str, config: dict[str, Any], **options: Any) -> af.RunInfo:
    """Run one node to the end (immediate mode: synchronously)."""
    return client.execute(one_node(node_type, config, options)).wait(timeout=60)


def log_text(client: af.Client, run_id: str) -> str:
    return "\n".join(e.format() for e in client.logs(run_id))
