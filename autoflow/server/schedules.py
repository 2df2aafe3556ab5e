"""Schedules over HTTP: ``/api/schedules`` (list, create, read, update, delete, pause,
resume, trigger now, backfill a range, preview the next fire times).

Thin, like every router: it checks the caller and calls ``client.schedules`` (see
docs/schedules.md). A schedule belongs to the token's organization; another
organization's schedule answers 404. Reading needs ``read``; triggering a run now needs
``execute``; creating, changing, deleting, pausing and backfilling need ``admin``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from autoflow.client import Client, Run
from autoflow.errors import NotFoundError
from autoflow.models import CatchupPolicy, OverlapPolicy, ScheduleInfo
from autoflow.server.auth import Principal
from autoflow.server.deps import ClientDep, require
from autoflow.server.errors import ERROR_RESPONSES, ApiError
from autoflow.server.executions import Execution, started

__all__ = ["ScheduleBody", "ScheduleChange", "own_schedule", "router"]

router = APIRouter(prefix="/api/schedules", tags=["schedules"], responses=ERROR_RESPONSES)

ScheduleId = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$", description="the schedule id")]
CanRead = Annotated[Principal, Depends(require("read"))]
CanExecute = Annotated[Principal, Depends(require("execute"))]
CanAdmin = Annotated[Principal, Depends(require("admin"))]


class ScheduleChange(BaseModel):
    """Fields of a schedule that can change (all optional in an update)."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, max_length=200, description="a cron expression (5 or 6 fields)")
    interval: float | None = Field(None, gt=0, description="seconds between slots (instead of cron)")
    timezone: str | None = Field(None, max_length=64, description="IANA zone of the cron expression")
    jitter: float | None = Field(None, ge=0, description="seconds; each slot fires up to this much later")
    overlap: OverlapPolicy | None = None
    catchup: CatchupPolicy | None = None
    catchup_window: float | None = Field(None, gt=0)
    inputs: dict[str, Any] | None = None
    slot_input: str | None = Field(None, max_length=128)
    priority: int | None = Field(None, ge=-1000, le=1000)
    note: str | None = Field(None, max_length=500)


class ScheduleBody(ScheduleChange):
    """A new schedule: the workflow (stored id or registered name) and when to run it."""

    workflow: str = Field(min_length=1, max_length=128)
    id: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
    paused: bool = False


class ScheduleList(BaseModel):
    schedules: list[ScheduleInfo]


class Backfill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime
    end: datetime
    limit: int = Field(100, ge=1, le=10_000)


class BackfillResult(BaseModel):
    executionIds: list[str]


class Preview(BaseModel):
    times: list[datetime] = Field(description="the next fire times, UTC")


def own_schedule(client: Client, schedule_id: str, principal: Principal) -> ScheduleInfo:
    """The schedule if it belongs to the caller's organization; 404 otherwise."""
    try:
        info = client.schedules.get(schedule_id)
    except NotFoundError:
        info = None
    if info is None or info.organization_id != principal.organization:
        raise ApiError(404, f"no schedule {schedule_id!r}")
    return info


def _given(body: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}


@router.get("", response_model=ScheduleList)
def list_schedules(
    client: ClientDep, principal: CanRead, workflow: Annotated[str | None, Query(max_length=128)] = None
) -> ScheduleList:
    """The organization's schedules, with their next fire times."""
    return ScheduleList(schedules=client.schedules.list(workflow=workflow, organization_id=principal.organization))


@router.post("", status_code=201, response_model=ScheduleInfo)
def create(body: ScheduleBody, client: ClientDep, principal: CanAdmin, response: Response) -> ScheduleInfo:
    """Create a schedule of a workflow this organization may run (cron or interval)."""
    fields = _given(body)
    workflow = fields.pop("workflow")
    info = client.schedules.create(workflow, **fields, user_id=principal.user, organization_id=principal.organization)
    response.headers["Location"] = f"/api/schedules/{info.id}"
    return info


@router.get("/{schedule_id}", response_model=ScheduleInfo)
def get(schedule_id: ScheduleId, client: ClientDep, principal: CanRead) -> ScheduleInfo:
    """One schedule: its settings and state (last slot, next fire time, recent events)."""
    return own_schedule(client, schedule_id, principal)


@router.patch("/{schedule_id}", response_model=ScheduleInfo)
def update(schedule_id: ScheduleId, body: ScheduleChange, client: ClientDep, principal: CanAdmin) -> ScheduleInfo:
    """Change some fields; the next fire time is computed again."""
    own_schedule(client, schedule_id, principal)
    return client.schedules.update(schedule_id, **_given(body))


@router.delete("/{schedule_id}", status_code=204)
def delete(schedule_id: ScheduleId, client: ClientDep, principal: CanAdmin) -> Response:
    """Delete a schedule (runs it started are kept)."""
    own_schedule(client, schedule_id, principal)
    client.schedules.delete(schedule_id)
    return Response(status_code=204)


@router.post("/{schedule_id}/pause", response_model=ScheduleInfo)
def pause(schedule_id: ScheduleId, client: ClientDep, principal: CanAdmin) -> ScheduleInfo:
    own_schedule(client, schedule_id, principal)
    return client.schedules.pause(schedule_id)


@router.post("/{schedule_id}/resume", response_model=ScheduleInfo)
def resume(schedule_id: ScheduleId, client: ClientDep, principal: CanAdmin) -> ScheduleInfo:
    own_schedule(client, schedule_id, principal)
    return client.schedules.resume(schedule_id)


@router.post("/{schedule_id}/trigger", status_code=202, response_model=Execution, responses={200: {"model": Execution}})
def trigger(schedule_id: ScheduleId, client: ClientDep, principal: CanExecute, response: Response) -> Execution:
    """Start a run of the schedule now (outside its slots)."""
    own_schedule(client, schedule_id, principal)
    found = client.schedules.trigger(schedule_id)
    run = found if isinstance(found, Run) else client.run(found.id)
    return started(run, response)


@router.post("/{schedule_id}/backfill", response_model=BackfillResult)
def backfill(schedule_id: ScheduleId, body: Backfill, client: ClientDep, principal: CanAdmin) -> BackfillResult:
    """Start one run per slot from ``start`` to ``end`` (at most ``limit``; more is a 400
    and starts nothing). Slots already run are not run again."""
    own_schedule(client, schedule_id, principal)
    return BackfillResult(executionIds=client.schedules.backfill(schedule_id, body.start, body.end, limit=body.limit))


@router.get("/{schedule_id}/preview", response_model=Preview)
def preview(
    schedule_id: ScheduleId, client: ClientDep, principal: CanRead, n: Annotated[int, Query(ge=1, le=100)] = 5
) -> Preview:
    """The next ``n`` fire times."""
    own_schedule(client, schedule_id, principal)
    return Preview(times=client.schedules.preview(schedule_id, n))
