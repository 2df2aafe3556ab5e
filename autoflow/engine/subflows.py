"""Sub-workflows: a node that runs another workflow as a child run and waits for it.

The child is an ordinary run (own id, progress and logs) linked to its parent; the
parent node holds no worker while it waits. When the child ends, the worker that ended
it settles the parent node (the reaper does it if that worker died first).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from autoflow import codec
from autoflow.context import log_record
from autoflow.define.definition import NodeSpec, parse_definition
from autoflow.define.schema import check_json_schema
from autoflow.engine.planner import node_seeds
from autoflow.engine.signing import sign_run, verify_definition
from autoflow.errors import InputError, NotFoundError
from autoflow.models import ErrorInfo, LogLevel, RunStatus
from autoflow.store.base import Claim, NewRun, NodeSeed, Progress, Ready, Store, child_token

__all__ = ["ChildRun", "SubFlows"]


class ChildRun(NamedTuple):
    """A checked child run, ready to be created: the run and its nodes."""

    run: NewRun
    nodes: list[NodeSeed]


class SubFlows:
    """Starts child runs and settles their parents."""

    def __init__(self, store: Store, secret: bytes | None = None) -> None:
        self.store = store
        self.secret = secret

    def prepare_child(self, claim: Claim, spec: NodeSpec, values: dict[str, Any]) -> ChildRun:
        """The child run a sub-workflow node starts; NotFoundError or InputError (naming
        the sub-workflow and the input) before anything is written."""
        name, digest = spec.workflow or ("", "")
        body = self.store.get_definition(digest)
        if body is None:
            raise NotFoundError(f"sub-workflow {name!r} (definition {digest}) is missing from the store")
        definition = codec.loads(body)
        verify_definition(definition, digest)
        specs, output = parse_definition(definition)
        inputs = _child_inputs(name, definition.get("inputs") or {}, values)
        key = f"sub:{claim.run_id}:{claim.node_id}"  # a re-run node finds its child
        run = NewRun(
            id=codec.keyed_run_id(key),
            workflow=name,
            digest=digest,
            inputs=inputs,
            output={"$ref": output} if isinstance(output, str) else output,
            created_at=time.time(),
            priority=claim.run_priority,
            trigger="subworkflow",
            idempotency_key=key,
            parent_run_id=claim.run_id,
            parent_node_id=claim.node_id,
            code=claim.code,  # the parent's shipped code serves its sub-workflows too
        )
        run = dataclasses.replace(run, signature=sign_run(self.secret, run))
        return ChildRun(run, node_seeds(specs))

    def start_child(
        self, claim: Claim, token: str, child: ChildRun, send: Callable[[Sequence[Ready]], None]
    ) -> Progress:
        """Create the child run, let the parent node wait for it (releasing its lease) and
        start the child."""
        child_id = self.store.create_run(child.run, child.nodes)
        note = log_record(LogLevel.INFO, f"started sub-workflow {child.run.workflow} as run {child_id}", claim.node_id)
        progress = self.store.await_child(claim.run_id, claim.node_id, token, child_id, [note])
        if progress.accepted:
            send(self.store.start_run(child_id))
        return progress

    def settle_parent(self, child_run_id: str) -> tuple[Progress, str] | None:
        """If ``child_run_id`` ended and belongs to a parent node, complete or fail that node."""
        if self.store.run_parent(child_run_id) is None:  # cheap: most runs have no parent
            return None
        child = self.store.get_run(child_run_id)
        if child is None or child.parent_run_id is None or child.parent_node_id is None or not child.finished:
            return None
        parent, node = child.parent_run_id, child.parent_node_id
        token = child_token(child.id)
        if child.status is RunStatus.COMPLETED:
            done = log_record(LogLevel.INFO, f"sub-workflow run {child.id} completed", node)
            return self.store.complete(parent, node, token, codec.dumps(child.output), [done]), parent
        cause = child.error
        error = ErrorInfo(
            type=cause.type if cause else "SubWorkflowCancelled",
            message=f"sub-workflow run {child.id} {child.status.value}" + (f": {cause.message}" if cause else ""),
            traceback=cause.traceback if cause else "",
            node_id=node,
        )
        failed = log_record(LogLevel.ERROR, f"failed: {error}", node)
        return self.store.fail(parent, node, token, error, None, [failed]), parent

    def settle_lost(self) -> list[tuple[Progress, str]]:
        """Settle parents whose child ended while nobody was there to tell them."""
        settled = []
        for _run_id, _node_id, child in self.store.awaiting_children():
            outcome = self.settle_parent(child)
            if outcome is not None:
                settled.append(outcome)
        return settled


def _child_inputs(name: str, schemas: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A child's inputs: the values given, defaults for the rest, checked against the schemas."""
    out = dict(values)
    for key, schema in schemas.items():
        if key not in out:
            if "default" not in schema:
                raise InputError(f"sub-workflow {name!r}: missing required input {key!r}")
            out[key] = schema["default"]
        problem = check_json_schema(out[key], schema)
        if problem:
            raise InputError(f"sub-workflow {name!r}, input {key!r}: {problem}")
    return out
