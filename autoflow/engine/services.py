"""What a node's context asks of its worker: what started the run, and starting another run.

``ctx.trigger`` (trigger nodes) reads the run once, when a node asks; ``ctx.start_workflow``
(error handlers) starts a detached run of a workflow this worker knows, once per node of a
run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoflow import codec
from autoflow.config import Limits
from autoflow.context import TriggerInfo
from autoflow.define.workflow import WorkflowRegistry
from autoflow.engine.planner import store_definitions, workflow_seeds
from autoflow.engine.signing import sign_run
from autoflow.store.base import Claim, NewRun, Ready, Store

__all__ = ["NodeServices"]

log = logging.getLogger("autoflow.executor")  # the executor's logger: its lines keep their name


class NodeServices:
    """The context callbacks of :class:`~autoflow.engine.executor.Executor`, and what they
    need from it."""

    store: Store
    registry: WorkflowRegistry
    secret: bytes | None
    limits: Limits
    send: Callable[[Sequence[Ready]], None]

    def _start_workflow(self, claim: Claim, name: str, inputs: dict[str, Any], trigger_data: Any) -> str:
        """``ctx.start_workflow``: a detached run of a workflow this worker knows, once per
        node of a run (its idempotency key finds the run a previous attempt started)."""
        wf = self.registry.workflow(name)
        values = wf.validate_inputs(inputs)
        data, _text = codec.json_checked(trigger_data, where="trigger_data", limits=self.limits)
        store_definitions(self.store, wf)
        key = f"start:{claim.run_id}:{claim.node_id}:{name}"
        new = NewRun(
            id=codec.keyed_run_id(key),
            workflow=wf.name,
            digest=wf.digest,
            inputs=values,
            output=wf.output,
            created_at=time.time(),
            priority=claim.run_priority,
            trigger="error",
            trigger_data=data,
            idempotency_key=key,
        )
        new = dataclasses.replace(new, signature=sign_run(self.secret, new))
        run_id = self.store.create_run(new, workflow_seeds(wf))
        self.send(self.store.start_run(run_id))  # nothing to send if a previous attempt started it
        log.info("run %s of %s started by %s/%s", run_id, wf.name, claim.run_id, claim.node_id)
        return run_id

    def _trigger(self, run_id: str) -> TriggerInfo:
        """What started the run (read once, when a node asks: trigger nodes)."""
        info = self.store.run_summaries([run_id])[0]  # the run's own fields, not its nodes'
        if info is None:
            return TriggerInfo()
        return TriggerInfo(info.trigger, info.trigger_data, info.user_id, info.organization_id, dict(info.inputs))
