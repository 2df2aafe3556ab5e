"""The app factory: one router per area, error handlers, body limits, request metrics.

The app is thin (style habit 12): each route parses input, checks the token, calls the
:class:`~autoflow.client.Client` and shapes the answer. A new area is one more entry in
:data:`ROUTERS` and, for a dashboard page, one more entry in ``autoflow.server.dashboard.NAV``.

Example::

    client = af.Client("redis://localhost:6379/0")
    app = create_app(client, af.Settings())       # uvicorn.run(app) — or `autoflow serve`
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoflow.client import Client
from autoflow.config import Settings
from autoflow.server import (
    bulk,
    dashboard,
    dashboard_schedules,
    executions,
    health,
    hooks,
    metrics,
    schedules,
    workflows,
)
from autoflow.server.auth import Authenticator
from autoflow.server.deps import AppState, parse_limit
from autoflow.server.errors import Problem, install_error_handlers, problem
from autoflow.server.hooks import HookConfig

__all__ = ["ROUTERS", "create_app"]

#: The areas of the API, in the order of the OpenAPI document.
ROUTERS: list[APIRouter] = [
    executions.router,
    workflows.router,
    bulk.router,
    schedules.router,
    hooks.router,
    health.router,
    metrics.router,
    dashboard.router,
    dashboard_schedules.router,
]

_VERSION = "1.0.0"


class _Limits:
    """Pure ASGI middleware: refuse bodies over ``max_bytes`` (413, by Content-Length or
    while streaming), and count requests by route template and status code."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = problem(413, f"the request body is larger than {self.max_bytes} bytes (AUTOFLOW_API_MAX_BODY_BYTES)")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await too_big(scope, receive, send)
            metrics.http_request(scope["method"], "(too large)", 413)
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A chunked body: read it here (up to the limit) and hand it on whole.
            chunks, seen, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                more = message.get("more_body", False)
                if seen > self.max_bytes:
                    await too_big(scope, receive, send)
                    metrics.http_request(scope["method"], "(too large)", 413)
                    return
            pending = [b"".join(chunks)]
            original = receive

            async def replay() -> Message:
                if not pending:
                    return await original()
                return {"type": "http.request", "body": pending.pop(), "more_body": False}

            receive = replay

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        route = scope.get("route")
        metrics.http_request(scope["method"], getattr(route, "path", "(unmatched)"), status[0])


def create_app(
    client: Client,
    settings: Settings | None = None,
    *,
    auth: Authenticator | None = None,
    hooks_config: HookConfig | None = None,
) -> Any:
    """The ASGI app serving ``client``: REST API, webhooks, metrics, dashboard.

    Keys, secrets and limits come from ``settings`` (default: the client's), read now;
    ``auth`` and ``hooks_config`` override them (tests)."""
    settings = settings or client.settings
    app = FastAPI(
        title="autoflow",
        version=_VERSION,
        description="Execute and watch autoflow workflows: the seed's execution API, workflows by id, "
        "signed webhooks, metrics. Authenticate with `Authorization: Bearer <JWT>` (scopes read, execute, admin).",
    )
    app.state.autoflow = AppState(
        client=client,
        settings=settings,
        auth=auth or Authenticator.from_settings(settings),
        read_limit=parse_limit(settings.api_rate_limit, "AUTOFLOW_API_RATE_LIMIT"),
        execute_limit=parse_limit(settings.api_execute_rate_limit, "AUTOFLOW_API_EXECUTE_RATE_LIMIT"),
    )
    app.state.hooks = hooks_config or HookConfig.from_settings(settings)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(_Limits, max_bytes=settings.api_max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
