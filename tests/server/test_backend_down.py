"""When Redis goes away: /readyz says so (503), /healthz still answers, API calls get a
503 problem naming the backend — never a hang or a bare 500."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

import autoflow as af
from autoflow.server import HookConfig, create_app
from tests.conftest import start_redis
from tests.server.conftest import Api, make_settings, start_server


def test_a_lost_backend_is_a_503(tmp_path: Path, settings: af.Settings) -> None:
    url, stop_redis = start_redis(tmp_path)
    mine = make_settings(settings)
    client = af.Client(url, settings=mine, workers=0)
    base, stop = start_server(create_app(client, mine, hooks_config=HookConfig()))
    api = Api(base, httpx.Client(base_url=base, timeout=30), client, mine)
    try:
        assert api.http.get("/readyz").status_code == 200
        stop_redis()
        ready = api.http.get("/readyz")
        assert ready.status_code == 503 and url in ready.json()["detail"]
        assert api.http.get("/healthz").status_code == 200
        started = time.monotonic()
        reply = api.http.post("/api/executions/execute", json={"workflowId": "api_flow"}, headers=api.auth())
        assert reply.status_code == 503, reply.text
        assert reply.headers["content-type"] == "application/problem+json" and "127.0.0.1" in reply.json()["detail"]
        assert time.monotonic() - started < 15
    finally:
        api.http.close()
        stop()
        client.close()
        stop_redis()  # again after a failure before the first stop: harmless
