"""Webhook triggers: ``POST /hooks/{workflow}/{path}`` (production) and
``POST /hooks-test/{workflow}/{path}`` (test mode).

A delivery is verified over the raw body (Standard Webhooks: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature``; 5-minute window; several secrets while
rotating) before anything is parsed, then deduplicated by its ``webhook-id``: a provider's
retry gets the first delivery's run, never a second one. The answer is 202 with the run id
and its status URL; ``?wait=SECONDS`` (at most 60) answers with the result if the run ends
in time, else still 202 with the run id.

Which workflows accept webhooks, with which secrets and for which organization, comes from
``AUTOFLOW_WEBHOOKS_FILE`` (JSON: ``{"<workflow id>": {"secrets": [...],
"organization_id": "..."}}``) and ``AUTOFLOW_WEBHOOK_SECRET`` (space-separated secrets for
any other workflow, whose runs belong to ``AUTOFLOW_WEBHOOK_ORGANIZATION``, default none).
A workflow without secrets has no webhook (404).

The request reaches the workflow through its inputs, by name: ``body`` (parsed JSON, or
text), ``headers`` (lowercased, secrets redacted), ``query`` and ``path``; the same four
are recorded as the run's trigger data. Test mode marks runs ``trigger="webhook_test"``,
deduplicates apart from production and waits 30 s for the result unless ``?wait`` says
otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from autoflow import codec
from autoflow.client import Client
from autoflow.config import Settings
from autoflow.define.definition import ID_PATTERN
from autoflow.errors import AutoflowError, RunTimeout
from autoflow.models import RunStatus
from autoflow.server import metrics
from autoflow.server.deps import state
from autoflow.server.errors import ERROR_RESPONSES, ApiError
from autoflow.server.executions import Execution
from autoflow.store.catalog import StoredWorkflow
from autoflow.triggers.webhooks import Verifier, WebhookRejected, delivery_key

__all__ = ["Hook", "HookConfig", "router"]

router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)

MAX_WAIT = 60.0
TEST_WAIT = 30.0
_DROP = {"authorization", "cookie", "webhook-signature", "proxy-authorization"}


@dataclass(frozen=True)
class Hook:
    """One workflow's webhook: who verifies it and which organization its runs belong to."""

    verifier: Verifier
    organization_id: str | None = None


class HookConfig:
    """Webhooks by workflow id, from the settings (read once, when the app is built).

    Example::

        HookConfig({"orders": Hook(Verifier(["whsec_..."]), "acme")})
        HookConfig.from_settings(af.Settings())
    """

    def __init__(self, hooks: Mapping[str, Hook] | None = None, default: Hook | None = None) -> None:
        self.hooks = dict(hooks or {})
        self.default = default

    def __repr__(self) -> str:
        return f"<HookConfig {sorted(self.hooks)} default={'yes' if self.default else 'no'}>"

    def get(self, workflow: str) -> Hook | None:
        return self.hooks.get(workflow, self.default)

    @classmethod
    def from_settings(cls, settings: Settings) -> HookConfig:
        default = None
        secrets = settings.webhook_secret.get_secret_value().split() if settings.webhook_secret else []
        if secrets:  # an empty variable means "no default webhook"
            default = Hook(_verifier(secrets, "AUTOFLOW_WEBHOOK_SECRET"), settings.webhook_organization or None)
        hooks: dict[str, Hook] = {}
        if settings.webhooks_file is not None:
            hooks = _read_file(settings.webhooks_file)
        return cls(hooks, default)


def _verifier(secrets: Any, where: str) -> Verifier:
    if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise AutoflowError(f"{where}: secrets must be a non-empty list of strings")
    try:
        return Verifier(secrets)
    except ValueError as exc:
        raise AutoflowError(f"{where}: {exc}") from None


def _read_file(path: Path) -> dict[str, Hook]:
    where = f"AUTOFLOW_WEBHOOKS_FILE {path}"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise AutoflowError(f"{where}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AutoflowError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise AutoflowError(f"{where}: expected an object of workflow id -> {{secrets, organization_id}}")
    hooks = {}
    for workflow, entry in data.items():
        if not ID_PATTERN.match(workflow) or not isinstance(entry, dict):
            raise AutoflowError(f"{where}: entry {workflow!r} must be a workflow id mapped to an object")
        org = entry.get("organization_id")
        if org is not None and not isinstance(org, str):
            raise AutoflowError(f"{where}: {workflow}.organization_id must be a string")
        hooks[workflow] = Hook(_verifier(entry.get("secrets"), f"{where}: {workflow}.secrets"), org)
    return hooks


def _body(request: Request, raw: bytes) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", field="body") from None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ApiError(415, "the body must be JSON or UTF-8 text", field="body") from None


def _request_data(request: Request, path: str, body: Any) -> dict[str, Any]:
    headers = {k: v for k, v in request.headers.items() if k not in _DROP}
    return {"path": path, "body": body, "query": dict(request.query_params), "headers": codec.redact(headers)}


def _inputs(client: Client, target: Any, data: dict[str, Any]) -> dict[str, Any]:
    wf = client.load_workflow(target) if isinstance(target, StoredWorkflow) else target
    return {name: data[name] for name in ("body", "headers", "query", "path") if name in wf.inputs}


async def _deliver(request: Request, workflow: str, path: str, wait: float | None, *, test: bool) -> JSONResponse:
    app = state(request)
    client = app.client
    hook: Hook | None = request.app.state.hooks.get(workflow)
    if hook is None or not ID_PATTERN.match(workflow):
        raise ApiError(404, f"workflow {workflow!r} has no webhook (configure its secrets)")
    raw = await request.body()
    try:
        delivery = hook.verifier.verify(request.headers, raw)
    except WebhookRejected:
        metrics.webhook_rejected()
        raise
    data = _request_data(request, path, _body(request, raw))
    target = await run_in_threadpool(client.resolve_workflow, workflow, organization_id=hook.organization_id)
    run = await run_in_threadpool(
        lambda: client.execute(
            target,
            _inputs(client, target, data),
            organization_id=hook.organization_id,
            trigger="webhook_test" if test else "webhook",
            trigger_data=data,
            idempotency_key=delivery_key(hook.organization_id, workflow, delivery.id, test=test),
        )
    )
    if run.created:
        metrics.run_started("webhook_test" if test else "webhook")
    url = f"/api/executions/{run.id}/status"
    wait = TEST_WAIT if wait is None and test else wait
    if wait:
        deadline = time.monotonic() + min(wait, MAX_WAIT)
        while (left := deadline - time.monotonic()) > 0:
            try:
                info = await run_in_threadpool(client.wait, run.id, min(left, 0.5))
            except RunTimeout:
                await asyncio.sleep(0)
                continue
            body = {
                "executionId": run.id,
                "status": info.status.value,
                "statusUrl": url,
                "created": run.created,
                "output": info.output if info.status is RunStatus.COMPLETED else None,
                "error": info.error.model_dump() if info.error else None,
            }
            return JSONResponse(body, status_code=200, headers={"Location": url})
    current = await run_in_threadpool(client.run_status, run.id)
    answer = Execution(executionId=run.id, status=current, statusUrl=url, created=run.created)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202, headers={"Location": url})


Wait = Annotated[float | None, Query(gt=0, le=MAX_WAIT, description="seconds to wait for the result")]
#: Deliveries are authenticated by their signature, not by a bearer token.
_SIGNED: dict[str, Any] = {"security": []}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Execution, "description": "accepted: the run id"},
    200: {"description": "the run ended within ?wait: its status, output or error"},
}


@router.post(
    "/hooks/{workflow}/{path:path}", status_code=202, response_model=None, responses=_RESPONSES, openapi_extra=_SIGNED
)
async def deliver(request: Request, workflow: str, path: str, wait: Wait = None) -> JSONResponse:
    """Start a run of ``workflow`` from a signed delivery (once per ``webhook-id``)."""
    return await _deliver(request, workflow, path, wait, test=False)


@router.post(
    "/hooks-test/{workflow}/{path:path}",
    status_code=202,
    response_model=None,
    responses=_RESPONSES,
    openapi_extra=_SIGNED,
)
async def deliver_test(request: Request, workflow: str, path: str, wait: Wait = None) -> JSONResponse:
    """Test mode: runs marked ``webhook_test``, answered with the result (30 s by default)."""
    return await _deliver(request, workflow, path, wait, test=True)
