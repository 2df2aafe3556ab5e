"""A real uvicorn on a free loopback port serving a real client (SQLite or Redis), and
token helpers. Each test gets its own server, store namespace and keys."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import uvicorn

import autoflow as af
from autoflow.server import HookConfig, create_app
from tests.conftest import free_port
from tests.server import flows as flows  # registers the test workflows

SECRET = "test-jwt-secret-that-is-long-enough-for-hs512-0123456789abcdefghij"


@dataclass
class Api:
    """A running server: its URL, an HTTP client, the autoflow client behind it."""

    url: str
    http: httpx.Client
    client: af.Client
    settings: af.Settings

    def token(self, org: str = "acme", scopes: str = "execute", sub: str = "u1", **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"sub": sub, "org": org, "scope": scopes, "iat": now, "exp": now + 600, **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")

    def auth(self, org: str = "acme", scopes: str = "execute", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org, scopes, **claims)}"}

    def wait_status(self, run_id: str, headers: dict[str, str], until: Callable[[dict[str, Any]], bool]) -> Any:
        """Poll the status endpoint until ``until(body)`` (deadline 30 s)."""
        deadline = time.monotonic() + 30
        while True:
            body = self.http.get(f"/api/executions/{run_id}/status", headers=headers).json()
            if until(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} never reached the condition: {body}")
            time.sleep(0.02)


def start_server(app: Any) -> tuple[str, Callable[[], None]]:
    """uvicorn in a thread on a free port; returns the base URL and a stop function."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def make_settings(settings: af.Settings, **changes: Any) -> af.Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "api_rate_limit": "1000/s",
        "api_execute_rate_limit": "1000/s",
        **changes,
    }
    return af.Settings(**{**settings.model_dump(), **values})


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_api(request: pytest.FixtureRequest, settings: af.Settings, backend: str) -> Iterator[Callable[..., Api]]:
    """Build and start a server: ``make_api(hooks=HookConfig(...), api_rate_limit="2/m")``."""
    stops: list[Callable[[], None]] = []

    def make(hooks: HookConfig | None = None, **changes: Any) -> Api:
        mine = make_settings(settings, namespace=f"t{uuid.uuid4().hex[:12]}", **changes)
        url = request.getfixturevalue("redis_url") if backend == "redis" else None
        client = af.Client(url, settings=mine, workers=2)
        base, stop = start_server(create_app(client, mine, hooks_config=hooks or HookConfig()))
        http = httpx.Client(base_url=base, timeout=30)

        def close() -> None:
            http.close()
            stop()
            client.close()

        stops.append(close)
        return Api(base, http, client, mine)

    yield make
    for stop in reversed(stops):
        stop()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
