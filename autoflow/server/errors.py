"""Every error of the API is JSON (``application/problem+json``): status, title, a
message that names the field, node or URL at fault, and ``field`` when one is."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from autoflow.codec import redact_text
from autoflow.errors import (
    AutoflowError,
    BackendError,
    ConflictError,
    InputError,
    NotFoundError,
    WorkflowError,
)
from autoflow.server.auth import AuthError
from autoflow.triggers.webhooks import WebhookRejected

__all__ = ["ERROR_RESPONSES", "ApiError", "Problem", "install_error_handlers", "problem"]

log = logging.getLogger("autoflow.server")
PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None


class ApiError(Exception):
    """Raised by routes: answered as a problem with this status and message."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def problem(
    status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = Problem(title=_TITLES.get(status, "Error"), status=status, detail=redact_text(detail), field=field)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM)


def _ref() -> dict[str, Any]:
    return {"content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


#: Documented on every route (the OpenAPI document lists what each may answer).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad request", **_ref()},
    401: {"description": "Missing, invalid or expired token", **_ref()},
    403: {"description": "The token lacks the scope, or names another organization", **_ref()},
    404: {"description": "Not found (or another organization's)", **_ref()},
    409: {"description": "Conflict (idempotency key reused with another body, version mismatch)", **_ref()},
    413: {"description": "Request body too large", **_ref()},
    422: {"description": "Invalid input; names the field", **_ref()},
    429: {"description": "Rate limited; see Retry-After", **_ref()},
    503: {"description": "The backend is unreachable", **_ref()},
}


def _field(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


def _allowed(request: Request) -> list[str]:
    """The methods of the most specific path template matching this path (a literal
    ``/api/executions/stats`` before ``/api/executions/{run_id}``)."""
    found: dict[int, set[str]] = {}
    routes = list(request.app.routes)
    while routes:
        route = routes.pop()
        inner = getattr(route, "original_router", None)  # an included router (FastAPI >= 0.16x)
        routes += list(getattr(inner, "routes", None) or getattr(route, "routes", None) or [])
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            params = str(getattr(route, "path", "")).count("{")
            found.setdefault(params, set()).update(getattr(route, "methods", None) or ())
    return sorted(found[min(found)]) if found else []


def _status_of(exc: AutoflowError) -> int:
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, WebhookRejected):
        return 400 if exc.missing else 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, (InputError, WorkflowError)):
        return 422
    if isinstance(exc, BackendError):
        return 503
    return 400


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, autoflow errors and HTTP errors to problems; anything else
    is a 500 problem whose detail names no internals (the traceback goes to the log)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, field=exc.field, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        where = _field(first.get("loc", ("body",)))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return problem(422, f"{where}: {first.get('msg', 'invalid')}{more}", field=where)

    @app.exception_handler(AutoflowError)
    async def _autoflow(request: Request, exc: AutoflowError) -> JSONResponse:
        status = _status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem(status, str(exc), headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only
            headers["Allow"] = ", ".join(_allowed(request))
        return problem(exc.status_code, str(exc.detail), headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, redact_text(repr(exc)), exc_info=exc)
        return problem(500, "internal error; the server log has the details")
