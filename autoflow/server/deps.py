"""What routes need from the app: the client, the caller (checked and rate limited)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from autoflow.client import Client
from autoflow.config import Settings
from autoflow.define.node import RateLimit
from autoflow.errors import WorkflowError
from autoflow.server.auth import Authenticator, AuthError, Principal
from autoflow.server.errors import ApiError

__all__ = ["COOKIE", "AppState", "ClientDep", "caller", "charge", "parse_limit", "require", "state"]

#: The dashboard keeps its token in this cookie (HttpOnly, SameSite=Strict).
COOKIE = "autoflow_token"


@dataclass
class AppState:
    """What the app factory hands to routes (``app.state.autoflow``)."""

    client: Client
    settings: Settings
    auth: Authenticator
    read_limit: RateLimit
    execute_limit: RateLimit


def state(request: Request) -> AppState:
    found: AppState = request.app.state.autoflow
    return found


def _client(request: Request) -> Client:
    return state(request).client


ClientDep = Annotated[Client, Depends(_client)]


def parse_limit(text: str, name: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except WorkflowError as exc:
        raise AuthError(f"{name}: {exc}", status=400) from None


def _token(request: Request, *, cookie: bool) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookie and request.cookies.get(COOKIE):
        return request.cookies[COOKIE]
    raise AuthError("no bearer JWT in the Authorization header")


def caller(request: Request, scope: str, *, cookie: bool = False) -> Principal:
    """The verified caller if it holds ``scope``: 401/403 otherwise."""
    principal = state(request).auth.decode(_token(request, cookie=cookie))
    if not principal.can(scope):
        raise AuthError(
            f"this token lacks the {scope!r} scope (it has: {', '.join(sorted(principal.scopes)) or 'none'})",
            status=403,
        )
    return principal


def charge(request: Request, principal: Principal, scope: str, tokens: int = 1, *, spent: int = 0) -> None:
    """Take ``tokens`` (at most the bucket's size; none: nothing to do) from the caller's
    budget for ``scope`` (its JWT's token bucket in the store, shared by API replicas), in
    one store call, all or none: 429 when the bucket holds fewer, and then none is taken.
    ``spent`` is what this request already took (``require``'s token): ``Retry-After`` is
    the time the bucket needs to hold the whole request (``spent`` and ``tokens``), so
    that a caller who waits that long is not refused again for want of them.
    Blocking: call it from a thread."""
    if tokens < 1:
        return
    app = state(request)
    limit = app.read_limit if scope == "read" else app.execute_limit
    key = f"api:{principal.organization}:{principal.token_id}:{'read' if scope == 'read' else 'write'}"
    wait = app.client.backend.store.take_token(key, limit.count, limit.per, tokens=tokens)
    if wait > 0:
        wait += spent * limit.per / limit.count
        raise ApiError(
            429,
            f"rate limit exceeded for this JWT ({limit.count} per {limit.per:g}s for {scope}); retry after {wait:.2f}s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def require(scope: str, *, cookie: bool = False) -> Callable[..., object]:
    """A dependency: the caller, holding ``scope``, within its rate limit."""

    async def dependency(request: Request) -> Principal:
        principal = caller(request, scope, cookie=cookie)
        await run_in_threadpool(charge, request, principal, scope)
        return principal

    return dependency
