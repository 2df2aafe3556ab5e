"""Starting many runs of one workflow in one request.

``POST /api/executions/execute-many`` (a stored workflow id or a registered name, as
``/api/executions/execute``) and ``POST /api/workflows/{id}/execute-many`` (a stored
workflow, as its ``/execute``): a list of input objects, optional idempotency keys (one
per item), options shared by every run. The answer lists the runs in the order of the
items. Every item is checked before any run is created (a bad one is a 422 naming
``inputs[i]``); then :meth:`~autoflow.client.Client.execute_many` submits them in a few
round trips per 500 runs.

Limits: ``AUTOFLOW_API_MAX_BULK_ITEMS`` items per request (413 past it), the request body
size limit as for any request, and the execute rate limit counts one token per
:data:`RUNS_PER_TOKEN` runs (rounded up; at most a full bucket, so that any allowed
request can pass): the first taken before the body is read, as for any request, the
others in one store call, all or none.

Keys that name existing runs are checked against the request (409 if a run was started
with another body) from the runs' own fields (``Store.run_summaries``: one read for all,
without their nodes), before anything is created.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from autoflow import codec
from autoflow.client import Client
from autoflow.define.workflow import Workflow
from autoflow.errors import InputError
from autoflow.models import RunInfo, RunStatus
from autoflow.run import Run
from autoflow.server import metrics
from autoflow.server.auth import Principal
from autoflow.server.deps import ClientDep, charge, require, state
from autoflow.server.errors import ERROR_RESPONSES, ApiError
from autoflow.server.executions import KEY_RULE, Execution, scoped_key
from autoflow.server.workflows import MAX_VERSION, WorkflowId
from autoflow.store.catalog import StoredWorkflow

__all__ = ["RUNS_PER_TOKEN", "ExecuteMany", "ExecuteStoredMany", "Executions", "router"]

router = APIRouter(responses=ERROR_RESPONSES)

#: A request costs one token of the execute rate limit per this many runs (rounded up):
#: up to 50 runs cost what one ``/execute`` costs.
RUNS_PER_TOKEN = 50
_ITEM = re.compile(r"^inputs\[(\d+)\]")

CanExecute = Annotated[Principal, Depends(require("execute"))]
Key = Annotated[str, Field(min_length=1, description=KEY_RULE)]  # its length: scoped_key checks it
_INPUTS = (
    "the workflow's inputs, one object per run (in the order of the answer); at most AUTOFLOW_API_MAX_BULK_ITEMS"
    " (413 above it: the server's setting, so not in this schema)"
)
_KEYS = "one per item: the same key (per organization) finds the same run, as Idempotency-Key does on /execute"


class ExecuteMany(BaseModel):
    """``/api/executions/execute``'s body with a list of inputs (and keys) instead of one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflowId: str = Field(min_length=1, max_length=128, description="a stored workflow id or a registered name")
    inputs: list[dict[str, Any]] = Field(min_length=1, description=_INPUTS)
    idempotencyKeys: list[Key] | None = Field(None, description=_KEYS)
    triggerData: Any = Field(None, description="what the trigger carried (recorded with every run)")
    userId: str | None = Field(None, max_length=200, description="default: the token's subject")
    organizationId: str | None = Field(None, max_length=200, description="must equal the token's organization")
    priority: int = Field(0, ge=-1000, le=1000, description="of every run")


class ExecuteStoredMany(BaseModel):
    """``/api/workflows/{id}/execute``'s body with a list of inputs (and keys) instead of one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: list[dict[str, Any]] = Field(min_length=1, description=_INPUTS)
    idempotencyKeys: list[Key] | None = Field(None, description=_KEYS)
    triggerData: Any = Field(None, description="what the trigger carried (recorded with every run)")
    priority: int = Field(0, ge=-1000, le=1000, description="of every run")
    version: int | None = Field(None, ge=1, le=MAX_VERSION, description="default: the latest version")


class Executions(BaseModel):
    """The runs started (or found again by their keys), in the order of the items."""

    executions: list[Execution]


@router.post(
    "/api/executions/execute-many",
    tags=["executions"],
    status_code=202,
    response_model=Executions,
    responses={200: {"model": Executions, "description": "every run was found by its idempotency key"}},
)
def execute_many(
    body: ExecuteMany, request: Request, client: ClientDep, principal: CanExecute, response: Response
) -> Executions:
    """Start one run of ``workflowId`` per item of ``inputs``; returns their ids at once
    (202; 200 when every one was found again by its idempotency key)."""
    if body.organizationId is not None and body.organizationId != principal.organization:
        raise ApiError(
            403,
            "organizationId differs from the token's organization (it comes from the token)",
            field="organizationId",
        )
    found = client.catalog.resolve(body.workflowId, principal.organization)
    return _submit(
        request,
        client,
        principal,
        found,
        body.inputs,
        body.idempotencyKeys,
        priority=body.priority,
        user_id=body.userId or principal.user,
        trigger_data=body.triggerData,
        response=response,
    )


@router.post(
    "/api/workflows/{workflow_id}/execute-many",
    tags=["workflows"],
    status_code=202,
    response_model=Executions,
    responses={200: {"model": Executions, "description": "every run was found by its idempotency key"}},
)
def execute_stored_many(
    workflow_id: WorkflowId,
    body: ExecuteStoredMany,
    request: Request,
    client: ClientDep,
    principal: CanExecute,
    response: Response,
) -> Executions:
    """Run a stored workflow (latest version, or ``version``) once per item of ``inputs``."""
    stored = client.stored_workflow(workflow_id, version=body.version, organization_id=principal.organization)
    return _submit(
        request,
        client,
        principal,
        stored,
        body.inputs,
        body.idempotencyKeys,
        priority=body.priority,
        user_id=principal.user,
        trigger_data=body.triggerData,
        response=response,
    )


def _submit(
    request: Request,
    client: Client,
    principal: Principal,
    target: Workflow | StoredWorkflow,
    items: list[dict[str, Any]],
    keys: list[str] | None,
    *,
    priority: int,
    user_id: str,
    trigger_data: Any,
    response: Response,
) -> Executions:
    most = state(request).settings.api_max_bulk_items
    if len(items) > most:
        raise ApiError(
            413,
            f"{len(items)} items: at most {most} runs per request (AUTOFLOW_API_MAX_BULK_ITEMS); split the list",
            field="inputs",
        )
    scoped = _scoped_keys(principal, keys, len(items))
    cost = min(math.ceil(len(items) / RUNS_PER_TOKEN), state(request).execute_limit.count)  # at most a full bucket
    charge(request, principal, "execute", cost - 1, spent=1)  # require("execute") took the first
    wf = client.load_workflow(target) if isinstance(target, StoredWorkflow) else target
    stored = target if isinstance(target, StoredWorkflow) else None
    earlier = _conflicts(client, principal, wf, stored, items, scoped, trigger_data)
    try:
        runs = client.execute_many(
            target,
            items,
            priority=priority,
            user_id=user_id,
            organization_id=principal.organization,
            trigger_data=trigger_data,
            trigger="api",
            idempotency_keys=scoped,
        )
    except InputError as exc:
        match = _ITEM.match(str(exc))
        raise ApiError(422, str(exc), field=f"inputs[{match.group(1)}]" if match else None) from None
    raced = [i for i, run in enumerate(runs) if not run.created and i not in earlier]  # made by a racing request
    if raced:
        note = "; a request racing with this one made it, and the other runs of this request started"
        found = client.run_summaries([runs[i] for i in raced])  # one read for all; a run gone meanwhile: 404
        for i, info in zip(raced, found, strict=True):
            _check_same(info, wf, stored, items[i], trigger_data, principal, i, note)
    response.status_code = 202 if any(run.created for run in runs) else 200
    metrics.run_started("api", sum(run.created for run in runs))
    statuses = client.run_statuses(runs)  # one read for all; a run gone meanwhile is a 404, as on /execute
    return Executions(executions=[_execution(run, status) for run, status in zip(runs, statuses, strict=True)])


def _scoped_keys(principal: Principal, keys: list[str] | None, count: int) -> list[str] | None:
    """The keys as the client sees them: per organization, as ``/execute``'s header."""
    if keys is None:
        return None
    if len(keys) != count:
        detail = f"idempotencyKeys must hold one key per item: {len(keys)} keys for {count} items"
        raise ApiError(422, detail, field="idempotencyKeys")
    seen: dict[str, int] = {}
    scoped = []
    for i, key in enumerate(keys):
        field = f"idempotencyKeys[{i}]"
        if key in seen:
            raise ApiError(422, f"{field} repeats idempotencyKeys[{seen[key]}]: one key names one run", field=field)
        scoped.append(scoped_key(principal.organization, key, field))
        seen[key] = i
    return scoped


def _conflicts(
    client: Client,
    principal: Principal,
    wf: Workflow,
    stored: StoredWorkflow | None,
    items: list[dict[str, Any]],
    keys: list[str] | None,
    trigger_data: Any,
) -> set[int]:
    """Before anything is created: the items whose key names an existing run (409 if that
    run was started with another request body)."""
    if not keys:
        return set()
    store = client.backend.store
    run_ids = [codec.keyed_run_id(key) for key in keys]
    created = store.created_at(run_ids)  # one cheap read first: most keys are new
    named = [i for i, at in enumerate(created) if at is not None]
    if not named:
        return set()
    found: set[int] = set()
    # The found runs' own fields, without their nodes (all the comparison needs), in one read.
    for i, info in zip(named, store.run_summaries([run_ids[i] for i in named]), strict=True):
        if info is None:  # gone meanwhile (past retention)
            continue
        _check_same(info, wf, stored, items[i], trigger_data, principal, i)
        found.add(i)
    return found


def _check_same(
    info: RunInfo,
    wf: Workflow,
    stored: StoredWorkflow | None,
    item: dict[str, Any],
    trigger_data: Any,
    principal: Principal,
    i: int,
    note: str = "",
) -> None:
    try:
        values = wf.validate_inputs(item)
    except InputError as exc:
        raise ApiError(422, f"inputs[{i}]: {exc}", field=f"inputs[{i}]") from None
    same = (
        info.organization_id == principal.organization
        and info.workflow == wf.name
        and info.workflow_id == (stored.id if stored else None)
        and info.workflow_version == (stored.version if stored else None)
        and info.inputs == values
        and codec.dumps(info.trigger_data) == codec.dumps(codec.to_json_value(trigger_data))
    )
    if not same:
        raise ApiError(
            409,
            f"idempotencyKeys[{i}] was used with another request (workflow, inputs or triggerData differ){note}",
            field=f"idempotencyKeys[{i}]",
        )


def _execution(run: Run, status: RunStatus) -> Execution:
    url = f"/api/executions/{run.id}/status"
    return Execution(executionId=run.id, status=status, statusUrl=url, created=run.created)
