"""Secrets (JWTs, the JWT key, webhook secrets, secret headers) never reach logs, stored
runs or answers: canaries are sent through every entry point, then looked for."""

from __future__ import annotations

import base64
import logging
import sqlite3
import time
from collections.abc import Callable

import pytest

from autoflow.server import Hook, HookConfig
from autoflow.triggers.webhooks import Verifier, sign
from tests.server.conftest import SECRET, Api

HOOK_SECRET = "whsec_" + base64.b64encode(b"canary-webhook-key-0123456789abc").decode()
HEADER_CANARY = "canaryHeaderValue0123456789"


def _stored_bytes(api: Api) -> bytes:
    """Everything the store holds for this test (its own namespace or database)."""
    store = api.client.backend.store
    if api.client.backend.kind == "redis":
        r = store.r  # type: ignore[attr-defined]
        keys = list(r.scan_iter(match=f"{api.settings.namespace}:*", count=1000))
        return b"\n".join(k.encode() + b"=" + (r.dump(k) or b"") for k in keys)
    path = api.client.url.removeprefix("sqlite:///")
    db = sqlite3.connect(path)
    try:
        rows = [
            repr(row).encode()
            for t in ("runs", "logs", "nodes", "workflows", "definitions")
            for row in db.execute(f"SELECT * FROM {t}")
        ]
    finally:
        db.close()
    return b"\n".join(rows)


def test_no_secret_is_logged_or_stored(make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(hooks=HookConfig({"api_hook": Hook(Verifier([HOOK_SECRET]), "acme")}))
    token = api.token("acme", "execute")
    headers = {"Authorization": f"Bearer {token}"}
    started = api.http.post("/api/executions/execute", json={"workflowId": "api_flow"}, headers=headers).json()
    body = b'{"order": 1}'
    hook_headers = {
        "webhook-id": "msg_canary",
        "webhook-timestamp": str(int(time.time())),
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
        "x-api-key": HEADER_CANARY,
        "x-secret-token": HEADER_CANARY,
    }
    hook_headers["webhook-signature"] = sign(HOOK_SECRET, "msg_canary", int(hook_headers["webhook-timestamp"]), body)
    delivered = api.http.post("/hooks/api_hook/x?wait=20", content=body, headers=hook_headers)
    assert delivered.status_code == 200, delivered.text
    assert HEADER_CANARY not in delivered.text
    refused = api.http.get("/api/executions", headers={"Authorization": f"Bearer {token}x"})
    assert refused.status_code == 401 and token not in refused.text
    api.wait_status(started["executionId"], headers, lambda b: b["status"] == "completed")
    status = api.http.get(f"/api/executions/{delivered.json()['executionId']}/status", headers=headers).text
    stored = _stored_bytes(api)
    texts = {"answers": (status + delivered.text).encode(), "store": stored, "logs": caplog.text.encode()}
    for canary in (token, SECRET, HOOK_SECRET, HOOK_SECRET.removeprefix("whsec_"), HEADER_CANARY):
        for where, text in texts.items():
            assert canary.encode() not in text, f"a secret reached the {where}"
    assert b"msg_canary" in stored  # the search does see what was stored
