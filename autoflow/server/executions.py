"""The seed's execution endpoints, and the run list, pause and resume.

``POST /api/executions/execute``, ``GET /api/executions/{id}/status``,
``GET /api/executions/{id}/logs``, ``DELETE /api/executions/{id}``,
``GET /api/executions/stats``; plus ``GET /api/executions`` (filters, cursor) and
``POST /api/executions/{id}/pause|resume``. The organization is the token's: another
organization's run answers 404, as an unknown one does.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from autoflow.client import Client, Run
from autoflow.errors import NotFoundError
from autoflow.models import LogEntry, QueueStats, RunInfo, RunStatus
from autoflow.server import metrics
from autoflow.server.auth import Principal
from autoflow.server.deps import ClientDep, require
from autoflow.server.errors import ERROR_RESPONSES, ApiError

__all__ = [
    "KEY_CHARS",
    "KEY_RULE",
    "ExecuteRequest",
    "Execution",
    "own_run",
    "own_summary",
    "router",
    "scoped_key",
    "started",
]

router = APIRouter(prefix="/api/executions", tags=["executions"], responses=ERROR_RESPONSES)

RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="the run (execution) id")]
#: How long an idempotency key ``Client.execute`` takes, the organization's scope included.
KEY_CHARS = 256
_SCOPE = "api:{}:"  # an organization's API keys, apart from others' (never shown to callers)
#: What an idempotency key given to the API may be (checked by :func:`scoped_key`, not by
#: the schema: the limit depends on the organization).
KEY_RULE = (
    f"printable, at most {KEY_CHARS - len(_SCOPE.format(''))} characters minus the length of the"
    " organization id (a longer key is a 422 that says the limit)"
)
CanRead = Annotated[Principal, Depends(require("read"))]
CanExecute = Annotated[Principal, Depends(require("execute"))]


class ExecuteRequest(BaseModel):
    """The seed's execute body; ``inputs`` and ``priority`` are autoflow's additions."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflowId: str = Field(min_length=1, max_length=128, description="a stored workflow id or a registered name")
    triggerData: Any = Field(None, description="what the trigger carried (recorded with the run)")
    userId: str | None = Field(None, max_length=200, description="default: the token's subject")
    organizationId: str | None = Field(None, max_length=200, description="must equal the token's organization")
    inputs: dict[str, Any] = Field(default_factory=dict, description="the workflow's inputs")
    priority: int = Field(0, ge=-1000, le=1000)


class Execution(BaseModel):
    """A run that was started (or found again by its idempotency key)."""

    executionId: str
    status: RunStatus
    statusUrl: str
    created: bool = Field(description="false when an idempotency key found an earlier run")


class LogsPage(BaseModel):
    logs: list[LogEntry]
    next: int = Field(description="pass as ?after= to get the following lines")
    finished: bool = Field(description="the run ended: no new lines will come after these")


class RunsPage(BaseModel):
    runs: list[RunInfo]
    next: str | None = Field(description="pass as ?before= for the next (older) page; null on the last")


class Control(BaseModel):
    executionId: str
    status: RunStatus


def own_run(client: Client, run_id: str, principal: Principal) -> RunInfo:
    """The run if it belongs to the caller's organization; 404 otherwise (not 403: ids of
    other organizations are not confirmed)."""
    try:
        info = client.status(run_id)
    except NotFoundError:
        info = None
    return _owned(info, run_id, principal)


def own_summary(client: Client, run_id: str, principal: Principal) -> RunInfo:
    """As :func:`own_run`, without the run's nodes: one cheap read, for the endpoints that
    only check the run is the caller's (logs, cancel, pause, resume)."""
    return _owned(client.backend.store.run_summaries([run_id])[0], run_id, principal)


def _owned(info: RunInfo | None, run_id: str, principal: Principal) -> RunInfo:
    if info is None or info.organization_id != principal.organization:
        raise ApiError(404, f"no execution {run_id!r}")
    return info


def scoped_key(organization: str, key: str, field: str) -> str:
    """An idempotency key given to the API, as the client gets it: in the organization's
    own key space. A 422 naming ``field`` (the header, or the item of a list) if it cannot
    be one: not printable, or longer than the organization's scope leaves room for. The
    message says the limit, not how the scope is written."""
    prefix = _SCOPE.format(organization)
    room = KEY_CHARS - len(prefix)
    if not key.isprintable():
        raise ApiError(422, f"{field} must be printable characters only", field=field)
    if room < 1:
        raise ApiError(
            422, f"{field} cannot be used: this organization's id is too long for idempotency keys", field=field
        )
    if len(key) > room:
        raise ApiError(422, f"{field} is too long: at most {room} characters (for this organization)", field=field)
    return prefix + key


def started(run: Run, response: Response) -> Execution:
    """The answer to an execute: 202 and Location for a new run, 200 for a found one."""
    if run.created:
        metrics.run_started("api")
    response.status_code = 202 if run.created else 200
    url = f"/api/executions/{run.id}/status"
    response.headers["Location"] = url
    return Execution(executionId=run.id, status=run.client.run_status(run.id), statusUrl=url, created=run.created)


@router.post("/execute", status_code=202, response_model=Execution, responses={200: {"model": Execution}})
def execute(body: ExecuteRequest, client: ClientDep, principal: CanExecute, response: Response) -> Execution:
    """Start a run of ``workflowId`` (the seed's endpoint); returns its id at once."""
    if body.organizationId is not None and body.organizationId != principal.organization:
        raise ApiError(
            403,
            "organizationId differs from the token's organization (it comes from the token)",
            field="organizationId",
        )
    run = client.execute(
        body.workflowId,
        body.inputs,
        priority=body.priority,
        user_id=body.userId or principal.user,
        organization_id=principal.organization,
        trigger_data=body.triggerData,
        trigger="api",
    )
    return started(run, response)


@router.get("/stats", response_model=QueueStats)
def stats(client: ClientDep, principal: CanRead) -> QueueStats:
    """The seed's QueueStats of both queues (cluster-wide counts; no ids or data)."""
    return client.stats()


@router.get("", response_model=RunsPage)
def runs(
    client: ClientDep,
    principal: CanRead,
    workflow: Annotated[str | None, Query(max_length=128)] = None,
    workflowId: Annotated[str | None, Query(max_length=128)] = None,
    status: RunStatus | None = None,
    userId: Annotated[str | None, Query(max_length=200)] = None,
    trigger: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64, description="a run id: older runs only")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunsPage:
    """The organization's runs, newest first, filtered."""
    found = client.runs(
        workflow,
        status,
        limit,
        organization_id=principal.organization,
        user_id=userId,
        trigger=trigger,
        workflow_id=workflowId,
        before=before,
    )
    return RunsPage(runs=found, next=found[-1].id if len(found) == limit else None)


@router.get("/{run_id}/status", response_model=RunInfo)
def status(run_id: RunId, client: ClientDep, principal: CanRead) -> RunInfo:
    """A run's status with every node (the seed's endpoint)."""
    return own_run(client, run_id, principal)


@router.get("/{run_id}/logs", response_model=LogsPage)
def logs(
    run_id: RunId,
    client: ClientDep,
    principal: CanRead,
    after: Annotated[int, Query(ge=0, le=2**62, description="the last log id already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    node: Annotated[str | None, Query(max_length=128)] = None,
) -> LogsPage:
    """A page of a run's logs, oldest first (the seed's endpoint, paged by log id)."""
    info = own_summary(client, run_id, principal)
    entries = client.logs(run_id, since=after, node=node, limit=limit)
    return LogsPage(logs=entries, next=entries[-1].id if entries else after, finished=info.finished)


@router.delete("/{run_id}", response_model=Control, status_code=202, responses={200: {"model": Control}})
def cancel(run_id: RunId, client: ClientDep, principal: CanExecute, response: Response) -> Control:
    """Cancel a run (the seed's endpoint): 202 while it stops, 200 if it had ended."""
    own_summary(client, run_id, principal)
    result = client.cancel(run_id)
    response.status_code = 200 if result.finished else 202
    return Control(executionId=run_id, status=result)


@router.post("/{run_id}/pause", response_model=Control)
def pause(run_id: RunId, client: ClientDep, principal: CanExecute) -> Control:
    """No new node of the run starts until it is resumed; running nodes finish."""
    own_summary(client, run_id, principal)
    return Control(executionId=run_id, status=client.pause(run_id))


@router.post("/{run_id}/resume", response_model=Control)
def resume(run_id: RunId, client: ClientDep, principal: CanExecute) -> Control:
    """Resume a paused run."""
    own_summary(client, run_id, principal)
    return Control(executionId=run_id, status=client.resume(run_id))
