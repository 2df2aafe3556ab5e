"""The web dashboard (``/ui``): runs with filters and queue stats, and a run page with the
DAG coloured by state, the node table, following logs and Cancel / Pause / Resume.

Server-rendered HTML (the notebook's snapshot renderer, ``autoflow.notebook.html``) and a
little vanilla JavaScript that re-fetches the run's fragment every second until it ends.
The token is pasted once on ``/ui/login`` and kept in an HttpOnly, SameSite=Strict cookie;
buttons post with a custom header, which a cross-site form cannot send.

Adding a page is a router (``dashboard_schedules.py`` is one) and one line in :data:`NAV`.
"""

from __future__ import annotations

import html
from collections import deque
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from autoflow.client import Run
from autoflow.draw import dag_svg
from autoflow.errors import AutoflowError
from autoflow.models import LogEntry, RunInfo, RunStatus
from autoflow.notebook.html import MAX_LOG_LINES, RUN_COLORS, run_html
from autoflow.notebook.snapshot import fetch_logs
from autoflow.server.auth import AuthError, Principal
from autoflow.server.deps import COOKIE, ClientDep, caller, state
from autoflow.server.errors import ApiError
from autoflow.server.executions import own_run, own_summary

__all__ = ["NAV", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

#: The dashboard's menu: (label, path). A new page adds one line.
NAV: list[tuple[str, str]] = [("Runs", "/ui/"), ("Schedules", "/ui/schedules")]

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#212529;background:#f8f9fa}
header{background:#212529;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
header a{color:#dee2e6;text-decoration:none} header b{font-size:16px;margin-right:10px}
main{padding:16px 20px;max-width:1200px}
table.af-list{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
table.af-list th,table.af-list td{border-bottom:1px solid #e9ecef;padding:5px 8px;text-align:left}
table.af-list th{background:#f1f3f5}
.af-pill{color:#fff;border-radius:9px;padding:1px 8px;font-size:12px}
form.af-filters{display:flex;gap:8px;margin:10px 0;align-items:center;font-size:13px}
.af-card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:12px;margin-bottom:14px}
button{font-size:13px;padding:4px 12px;border-radius:4px;border:1px solid #adb5bd;background:#fff;cursor:pointer}
button:disabled{opacity:.45;cursor:default}
"""

_JS = """
const box = document.getElementById('af-live');
const url = box.dataset.fragment;
async function refresh() {
  const r = await fetch(url, {headers: {'X-Autoflow-UI': '1'}});
  if (r.ok) { box.innerHTML = await r.text(); }
  const done = ['completed', 'failed', 'cancelled'].includes(box.querySelector('.af-run')?.dataset.status);
  for (const b of document.querySelectorAll('button[data-action]')) {
    const s = box.querySelector('.af-run')?.dataset.status;
    const a = b.dataset.action;
    b.disabled = done || (a === 'pause' && s === 'paused') || (a === 'resume' && s !== 'paused');
  }
  if (!done) setTimeout(refresh, 1000);
}
for (const b of document.querySelectorAll('button[data-action]')) {
  b.addEventListener('click', async () => {
    b.disabled = true;
    await fetch(b.dataset.url, {method: 'POST', headers: {'X-Autoflow-UI': '1'}});
    refresh();
  });
}
refresh();
"""


def _page(title: str, body: str, *, script: str = "") -> HTMLResponse:
    nav = "".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in NAV)
    logout = '<form method="post" action="/ui/logout" style="margin-left:auto"><button>Log out</button></form>'
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} · autoflow</title>"
        f"<style>{_CSS}</style></head><body><header><b>autoflow</b>{nav}{logout}</header>"
        f"<main>{body}</main>{f'<script>{script}</script>' if script else ''}</body></html>"
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


def _viewer(request: Request) -> Principal | None:
    try:
        return caller(request, "read", cookie=True)
    except AuthError:
        return None


def _pill(status: RunStatus) -> str:
    return (
        f'<span class="af-pill af-status-{status.value}" style="background:{RUN_COLORS[status]}">{status.value}</span>'
    )


@router.get("/login")
def login_form(error: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    note = f'<p style="color:#c92a2a">{html.escape(error)}</p>' if error else ""
    body = (
        '<div class="af-card" style="max-width:640px"><h3>Sign in</h3>'
        "<p>Paste an API token (a JWT with at least the <code>read</code> scope; "
        "<code>autoflow token --org ORG --scope execute</code> makes one).</p>"
        f'{note}<form method="post" action="/ui/login"><textarea name="token" rows="5" style="width:100%" '
        'aria-label="token"></textarea><p><button type="submit">Sign in</button></p></form></div>'
    )
    return _page("Sign in", body)


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=5)
    token = (form.get("token") or [""])[0]
    try:
        principal = state(request).auth.decode(token.strip())
    except AuthError as exc:
        return RedirectResponse(f"/ui/login?error={quote(str(exc)[:150])}", status_code=303)
    if not principal.can("read"):
        return RedirectResponse(f"/ui/login?error={quote('the read scope is missing from this JWT')}", status_code=303)
    response = RedirectResponse("/ui/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path="/ui", secure=secure)
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _runs_table(runs: list[RunInfo]) -> str:
    rows = "".join(
        f'<tr class="af-run-row" data-run="{html.escape(r.id)}"><td><a href="/ui/runs/{html.escape(r.id)}">'
        f"<code>{html.escape(r.id)}</code></a></td><td>{html.escape(r.workflow)}</td><td>{_pill(r.status)}</td>"
        f"<td>{html.escape(r.trigger)}</td><td>{html.escape(r.user_id or '')}</td>"
        f"<td>{r.created_at:%Y-%m-%d %H:%M:%S}</td></tr>"
        for r in runs
    )
    head = "<tr><th>run</th><th>workflow</th><th>status</th><th>trigger</th><th>user</th><th>created (UTC)</th></tr>"
    return f'<table class="af-list af-runs">{head}{rows}</table>' + ("" if runs else "<p>No runs.</p>")


@router.get("/")
def runs_page(
    request: Request,
    client: ClientDep,
    workflow: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    trigger: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        return RedirectResponse("/ui/login", status_code=303)
    state_filter = RunStatus(status) if status in {s.value for s in RunStatus} else None
    runs = client.runs(
        workflow or None,
        state_filter,
        50,
        organization_id=viewer.organization,
        trigger=trigger or None,
        before=before or None,
    )
    stats = client.stats()
    options = "".join(
        f'<option value="{s.value}"{" selected" if state_filter is s else ""}>{s.value}</option>' for s in RunStatus
    )
    filters = (
        '<form class="af-filters" method="get" action="/ui/">'
        f'<input name="workflow" placeholder="workflow" value="{html.escape(workflow or "")}">'
        f'<select name="status"><option value="">any status</option>{options}</select>'
        f'<input name="trigger" placeholder="trigger" value="{html.escape(trigger or "")}">'
        "<button type=submit>Filter</button></form>"
    )
    queues = "".join(
        f"<tr><td>{name}</td><td>{c.waiting}</td><td>{c.active}</td><td>{c.completed}</td><td>{c.failed}</td></tr>"
        for name, c in (("workflow", stats.workflow), ("node", stats.node))
    )
    more = ""
    if len(runs) == 50:
        more = f'<p><a href="/ui/?before={html.escape(runs[-1].id)}">older runs →</a></p>'
    body = (
        f'<div class="af-card"><h3 style="margin-top:0">Queues</h3><table class="af-list af-queues">'
        f"<tr><th>queue</th><th>waiting</th><th>active</th><th>completed</th><th>failed</th></tr>{queues}</table></div>"
        f'<div class="af-card"><h3 style="margin-top:0">Runs of {html.escape(viewer.organization)}</h3>'
        f"{filters}{_runs_table(runs)}{more}</div>"
    )
    return _page("Runs", body)


def _fragment(request: Request, run_id: str) -> str:
    app = state(request)
    viewer = _viewer(request)
    if viewer is None:
        raise ApiError(401, "sign in on /ui/login")
    info = own_run(app.client, run_id, viewer)
    try:
        svg: str | None = dag_svg(
            app.client.graph(info), {k: n.status for k, n in info.nodes.items()}, title=info.workflow
        )
    except AutoflowError:
        svg = None
    tail: deque[LogEntry] = deque(maxlen=MAX_LOG_LINES)  # the newest lines; older ones are counted
    fetched, _ = fetch_logs(Run(app.client, run_id), 0, tail)
    return run_html(info, list(tail), svg, skipped=fetched - len(tail))


RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: RunId) -> Response:
    if _viewer(request) is None:
        return RedirectResponse("/ui/login", status_code=303)
    fragment = _fragment(request, run_id)
    buttons = "".join(
        f'<button data-action="{a}" data-url="/ui/runs/{html.escape(run_id)}/{a}">{a.title()}</button> '
        for a in ("cancel", "pause", "resume")
    )
    body = (
        f'<p><a href="/ui/">← runs</a></p><div class="af-card"><div style="margin-bottom:8px">{buttons}</div>'
        f'<div id="af-live" data-fragment="/ui/runs/{html.escape(run_id)}/fragment">{fragment}</div></div>'
    )
    return _page(f"Run {run_id}", body, script=_JS)


@router.get("/runs/{run_id}/fragment")
def run_fragment(request: Request, run_id: RunId) -> HTMLResponse:
    return HTMLResponse(_fragment(request, run_id), headers={"Cache-Control": "no-store"})


def _ui_caller(request: Request, scope: str) -> Principal:
    """The caller of a dashboard action: the page's own header (which a form posted from
    another site cannot send), and a cookie or bearer token holding ``scope``."""
    if request.headers.get("x-autoflow-ui") != "1":
        raise ApiError(403, "dashboard actions need the X-Autoflow-UI header")
    return caller(request, scope, cookie=True)


def _actor(request: Request) -> Principal:
    return _ui_caller(request, "execute")


@router.post("/runs/{run_id}/{action}")
def run_action(
    request: Request,
    client: ClientDep,
    run_id: RunId,
    action: Annotated[str, Path(pattern="^(cancel|pause|resume)$")],
    principal: Annotated[Principal, Depends(_actor)],
) -> JSONResponse:
    own_summary(client, run_id, principal)
    status = {"cancel": client.cancel, "pause": client.pause, "resume": client.resume}[action](run_id)
    return JSONResponse({"executionId": run_id, "status": status.value})
