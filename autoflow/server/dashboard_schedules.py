"""The dashboard's schedules page (``/ui/schedules``): each schedule with when it fires
next, what it fired last and its recent events, and Pause / Resume / Run now buttons.

Like the rest of the dashboard: server-rendered HTML, buttons that post with the
``X-Autoflow-UI`` header, and nothing but calls to ``client.schedules``.
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from autoflow.models import ScheduleInfo
from autoflow.server.auth import Principal
from autoflow.server.dashboard import _page, _ui_caller, _viewer
from autoflow.server.deps import ClientDep
from autoflow.server.errors import ApiError
from autoflow.server.schedules import own_schedule

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

_JS = """
for (const b of document.querySelectorAll('button[data-url]')) {
  b.addEventListener('click', async () => {
    b.disabled = true;
    await fetch(b.dataset.url, {method: 'POST', headers: {'X-Autoflow-UI': '1'}});
    location.reload();
  });
}
"""


def _when(s: ScheduleInfo) -> str:
    if s.cron:
        return f"<code>{html.escape(s.cron)}</code> {html.escape(s.timezone)}"
    return f"every {s.interval:g} s" if s.interval else ""


def _row(s: ScheduleInfo) -> str:
    sid = html.escape(s.id)
    state = "paused" if s.paused else "active"
    nxt = f"{s.next_fire_at:%Y-%m-%d %H:%M:%S}" if s.next_fire_at and not s.paused else "—"
    last = f"{s.last_fired_at:%Y-%m-%d %H:%M:%S}" if s.last_fired_at else "—"
    run = f'<a href="/ui/runs/{html.escape(s.last_run_id)}">{html.escape(s.last_run_id)}</a>' if s.last_run_id else ""
    events = "<br>".join(f"{e.at:%H:%M:%S} {html.escape(e.kind.value)} {html.escape(e.message)}" for e in s.events[-3:])
    toggle = "resume" if s.paused else "pause"
    buttons = (
        f'<button data-url="/ui/schedules/{sid}/{toggle}">{toggle.title()}</button> '
        f'<button data-url="/ui/schedules/{sid}/trigger">Run now</button>'
    )
    return (
        f'<tr class="af-schedule-row" data-schedule="{sid}"><td><code>{sid}</code></td>'
        f"<td>{html.escape(s.workflow)}</td><td>{_when(s)}</td><td>{state}</td><td>{nxt}</td>"
        f"<td>{last} {run}</td><td>{s.fired}</td><td style='font-size:12px'>{events}</td><td>{buttons}</td></tr>"
    )


@router.get("/schedules")
def schedules_page(request: Request, client: ClientDep) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        return RedirectResponse("/ui/login", status_code=303)
    found = client.schedules.list(organization_id=viewer.organization)
    head = (
        "<tr><th>schedule</th><th>workflow</th><th>when</th><th>state</th><th>next fire (UTC)</th>"
        "<th>last fired (UTC)</th><th>runs</th><th>recent events</th><th></th></tr>"
    )
    table = f'<table class="af-list af-schedules">{head}{"".join(_row(s) for s in found)}</table>'
    body = (
        f'<div class="af-card"><h3 style="margin-top:0">Schedules of {html.escape(viewer.organization)}</h3>'
        f"{table}{'' if found else '<p>No schedules.</p>'}</div>"
    )
    return _page("Schedules", body, script=_JS)


def _actor(request: Request) -> Principal:  # each action checks its own scope below
    return _ui_caller(request, "read")


@router.post("/schedules/{schedule_id}/{action}")
def schedule_action(
    client: ClientDep,
    schedule_id: Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")],
    action: Annotated[str, Path(pattern="^(pause|resume|trigger)$")],
    principal: Annotated[Principal, Depends(_actor)],
) -> JSONResponse:
    needed = "execute" if action == "trigger" else "admin"
    if not principal.can(needed):
        raise ApiError(403, f"this token lacks the {needed} scope")
    own_schedule(client, schedule_id, principal)
    if action == "trigger":
        run = client.schedules.trigger(schedule_id)
        return JSONResponse({"executionId": run.id})
    info = client.schedules.pause(schedule_id) if action == "pause" else client.schedules.resume(schedule_id)
    return JSONResponse({"schedule": info.id, "paused": info.paused})
