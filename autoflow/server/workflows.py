"""Workflows stored by id as JSON definitions (versioned), and executing them by id.

``POST /api/workflows`` (create; 409 if the id exists), ``GET /api/workflows``,
``GET /api/workflows/{id}[?version=n]``, ``PUT /api/workflows/{id}`` (a new version;
``If-Match: <version>`` makes it conditional), ``POST /api/workflows/{id}/execute`` with an
optional ``Idempotency-Key`` header: the same key and body give the same run (200), the
same key with another body is a 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from autoflow import codec
from autoflow.client import Client
from autoflow.define.definition import ID_PATTERN
from autoflow.server.auth import Principal
from autoflow.server.deps import ClientDep, require
from autoflow.server.errors import ERROR_RESPONSES, ApiError
from autoflow.server.executions import KEY_RULE, Execution, scoped_key, started
from autoflow.store.catalog import StoredWorkflow

__all__ = ["router"]

router = APIRouter(prefix="/api/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

WorkflowId = Annotated[str, Path(pattern=ID_PATTERN.pattern, description="the stored workflow's id")]
MAX_VERSION = 2**31 - 1
CanRead = Annotated[Principal, Depends(require("read"))]
CanAdmin = Annotated[Principal, Depends(require("admin"))]
CanExecute = Annotated[Principal, Depends(require("execute"))]


class WorkflowBody(BaseModel):
    """A definition to store (``af.Workflow.to_dict()`` format); ``id`` defaults to its name."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, pattern=ID_PATTERN.pattern)
    definition: dict[str, Any]


class WorkflowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    definition: dict[str, Any]


class StoredWorkflowOut(BaseModel):
    id: str
    version: int
    organizationId: str | None
    name: str
    definition: dict[str, Any]
    createdAt: float


class WorkflowList(BaseModel):
    workflows: list[StoredWorkflowOut]


class ExecuteStored(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: dict[str, Any] = Field(default_factory=dict)
    triggerData: Any = None
    priority: int = Field(0, ge=-1000, le=1000)
    version: int | None = Field(None, ge=1, le=MAX_VERSION, description="default: the latest version")


def _out(stored: StoredWorkflow) -> StoredWorkflowOut:
    return StoredWorkflowOut.model_validate(stored.to_json())


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    text = if_match.strip().strip('"').removeprefix('W/"').strip('"')
    if not text.isdigit() or int(text) > MAX_VERSION:
        raise ApiError(400, "If-Match must be the version number the update is based on", field="If-Match")
    return int(text)


@router.post("", status_code=201, response_model=StoredWorkflowOut)
def create(body: WorkflowBody, client: ClientDep, principal: CanAdmin, response: Response) -> StoredWorkflowOut:
    """Store a new workflow (version 1); 409 if the id is taken in this organization."""
    stored = client.save_workflow(
        body.definition, workflow_id=body.id, organization_id=principal.organization, expected_version=0
    )
    response.headers["Location"] = f"/api/workflows/{stored.id}"
    return _out(stored)


@router.get("", response_model=WorkflowList)
def list_workflows(
    client: ClientDep, principal: CanRead, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> WorkflowList:
    """The organization's stored workflows (latest versions), by id."""
    found = client.stored_workflows(organization_id=principal.organization, limit=limit)
    return WorkflowList(workflows=[_out(w) for w in found])


@router.get("/{workflow_id}", response_model=StoredWorkflowOut)
def get(
    workflow_id: WorkflowId,
    client: ClientDep,
    principal: CanRead,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> StoredWorkflowOut:
    """A stored workflow: its latest version, or ``?version=n``."""
    return _out(client.stored_workflow(workflow_id, version=version, organization_id=principal.organization))


@router.put("/{workflow_id}", response_model=StoredWorkflowOut, responses={201: {"model": StoredWorkflowOut}})
def update(
    workflow_id: WorkflowId,
    body: WorkflowUpdate,
    client: ClientDep,
    principal: CanAdmin,
    response: Response,
    if_match: Annotated[str | None, Header(max_length=32)] = None,
) -> StoredWorkflowOut:
    """Store a new version (201 when it creates the id). With ``If-Match: n`` only if the
    latest version is n (else 409)."""
    stored = client.save_workflow(
        body.definition,
        workflow_id=workflow_id,
        organization_id=principal.organization,
        expected_version=_version(if_match),
    )
    response.status_code = 201 if stored.version == 1 else 200
    return _out(stored)


@router.post("/{workflow_id}/execute", status_code=202, response_model=Execution, responses={200: {"model": Execution}})
def execute(
    workflow_id: WorkflowId,
    client: ClientDep,
    principal: CanExecute,
    response: Response,
    body: ExecuteStored | None = None,
    idempotency_key: Annotated[str | None, Header(min_length=1, description=KEY_RULE)] = None,
) -> Execution:
    """Run a stored workflow (latest version, or ``version``). The same
    ``Idempotency-Key`` with the same body returns the first run (200); with another
    body it is refused (409)."""
    key = scoped_key(principal.organization, idempotency_key, "Idempotency-Key") if idempotency_key else None
    body = body or ExecuteStored()
    stored = client.stored_workflow(workflow_id, version=body.version, organization_id=principal.organization)
    run = client.execute(
        stored,
        body.inputs,
        priority=body.priority,
        user_id=principal.user,
        organization_id=principal.organization,
        trigger_data=body.triggerData,
        trigger="api",
        idempotency_key=key,
    )
    if not run.created:  # found by its key: the run's own fields tell whether it is this request's
        info = client.run_summaries([run])[0]
        same = (
            info.organization_id == principal.organization
            and info.workflow_id == stored.id
            and info.workflow_version == stored.version
            and info.inputs == stored_inputs(client, stored, body.inputs)
            and codec.dumps(info.trigger_data) == codec.dumps(codec.to_json_value(body.triggerData))
        )
        if not same:
            raise ApiError(409, "this Idempotency-Key was used with another request body", field="Idempotency-Key")
    return started(run, response)


def stored_inputs(client: Client, stored: StoredWorkflow, inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs a run of ``stored`` records for ``inputs`` (defaults applied)."""
    values: dict[str, Any] = client.load_workflow(stored).validate_inputs(inputs)
    return values
