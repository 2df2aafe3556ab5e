"""The service quick start of the README, on a real server: the example workflow JSON
is stored over HTTP, executed with a JWT and triggered by examples/send_webhook.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autoflow.server import Hook, HookConfig
from autoflow.triggers.webhooks import Verifier
from examples import service_flows as service_flows  # registers the example's nodes
from tests.server.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"example-secret-0123456789abcdef").decode()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_the_readme_service_quick_start(make_api: Callable[..., Api]) -> None:
    api = make_api(hooks=HookConfig(default=Hook(Verifier([SECRET]), "acme")))
    admin = api.auth(scopes="admin")
    stored = api.http.post(
        "/api/workflows",
        content=(ROOT / "examples" / "orders.json").read_bytes(),
        headers={**admin, "content-type": "application/json"},
    )
    assert stored.status_code == 201, stored.text
    order = {"id": "A1", "items": [{"price": 9.5, "qty": 2}]}
    run = api.http.post("/api/workflows/orders/execute", json={"inputs": {"body": order}}, headers=admin).json()
    done = api.wait_status(run["executionId"], admin, lambda b: b["status"] == "completed")
    assert done["output"] == {"order": "A1", "total": 19.0} and done["workflow_version"] == 1

    env = {**os.environ, "AUTOFLOW_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    send = [
        sys.executable,
        str(ROOT / "examples" / "send_webhook.py"),
        f"{api.url}/hooks/orders/created",
        json.dumps(order),
    ]
    first = subprocess.run(
        [*send, "--id", "msg_1", "--wait", "20"], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0 and first.stdout.startswith("200 "), first.stdout + first.stderr
    answer = json.loads(first.stdout[4:])
    assert answer["output"] == {"order": "A1", "total": 19.0}
    again = subprocess.run([*send, "--id", "msg_1"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout[4:])["executionId"] == answer["executionId"]  # one run per delivery
    status = api.http.get(f"/api/executions/{answer['executionId']}/status", headers=admin).json()
    assert status["workflow_id"] == "orders" and status["trigger"] == "webhook"
    api.http.cookies.set("autoflow_token", api.token(scopes="read"))
    page = api.http.get("/ui/")
    assert page.status_code == 200 and answer["executionId"] in page.text
