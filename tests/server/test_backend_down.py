"""When Redis goes away: /readyz says so (503), /healthz still answers, API calls get a
503 problem naming the backend — never a hang or a bare 500."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import autoflow as af
from autoflow.server import HookConfig, create_app
from tests.conftest import _need_redis, free_port
from tests.server.conftest import Api, make_settings, start_server


def _redis(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        _need_redis("redis-server is not installed")
        raise AssertionError("unreachable")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def test_a_lost_backend_is_a_503(tmp_path: Path, settings: af.Settings) -> None:
    proc, url = _redis(tmp_path)
    mine = make_settings(settings)
    client = af.Client(url, settings=mine, workers=0)
    base, stop = start_server(create_app(client, mine, hooks_config=HookConfig()))
    api = Api(base, httpx.Client(base_url=base, timeout=30), client, mine)
    try:
        assert api.http.get("/readyz").status_code == 200
        proc.terminate()
        proc.wait(10)
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
        if proc.poll() is None:
            proc.kill()
