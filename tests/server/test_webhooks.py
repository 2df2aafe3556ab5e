"""Webhooks: Standard Webhooks verification (pure, then over HTTP), dedupe by delivery id,
?wait, test mode, and the negative table."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import autoflow as af
from autoflow.server import Hook, HookConfig
from autoflow.server.hooks import HookConfig as Config
from autoflow.triggers.webhooks import Verifier, WebhookRejected, delivery_key, sign
from tests.server.conftest import Api

KEY = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_KEY = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()


def _headers(body: bytes, *, secret: str = KEY, msg_id: str | None = None, ts: int | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


BODY = json.dumps({"order": 42}).encode()


def _negative() -> list[tuple[str, dict[str, str], bytes, str]]:
    """The negative table, built when a test runs (timestamps are relative to now)."""
    now = int(time.time())
    good = _headers(BODY, msg_id="msg_fixed", ts=now)
    return [
        (
            "bad signature",
            {**good, "webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode()},
            BODY,
            "no valid",
        ),
        ("old timestamp", _headers(BODY, ts=now - 400), BODY, "too old"),
        ("future timestamp", _headers(BODY, ts=now + 400), BODY, "future"),
        ("one byte changed", good, BODY.replace(b"42", b"43"), "no valid"),
        ("wrong secret", _headers(BODY, secret=OTHER), BODY, "no valid"),
        ("timestamp changed", {**good, "webhook-timestamp": str(now - 1)}, BODY, "no valid"),
        ("id changed", {**good, "webhook-id": "msg_other"}, BODY, "no valid"),
        (
            "unknown version",
            {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v2,")},
            BODY,
            "no valid",
        ),
        ("timestamp not a number", {**good, "webhook-timestamp": "soon"}, BODY, "unix seconds"),
    ]


CASES = [case[0] for case in _negative()]
MISSING = ["webhook-id", "webhook-timestamp", "webhook-signature"]


@pytest.mark.parametrize("case", CASES)
def test_verifier_negative_table(case: str) -> None:
    _, headers, body, words = next(c for c in _negative() if c[0] == case)
    with pytest.raises(WebhookRejected, match=words):
        Verifier([KEY]).verify(headers, body)


@pytest.mark.parametrize("missing", MISSING)
def test_verifier_missing_headers(missing: str) -> None:
    headers = {k: v for k, v in _headers(BODY).items() if k != missing}
    with pytest.raises(WebhookRejected, match=f"missing header {missing}") as caught:
        Verifier([KEY]).verify(headers, BODY)
    assert caught.value.missing


def test_verifier_rotation_and_keys() -> None:
    verifier = Verifier([KEY, OLD_KEY])
    assert verifier.verify(_headers(BODY, secret=OLD_KEY, msg_id="a"), BODY).id == "a"
    both = _headers(BODY, secret=OTHER, msg_id="b")
    both["webhook-signature"] += " " + sign(KEY, "b", int(both["webhook-timestamp"]), BODY)
    assert verifier.verify(both, BODY).id == "b"  # the sender rotates: several signatures
    assert Verifier(["plain-text-secret"]).verify(_headers(BODY, secret="plain-text-secret"), BODY)
    assert KEY not in repr(verifier) and "secret" in repr(verifier)
    with pytest.raises(ValueError, match="base64"):
        Verifier(["whsec_???"])
    assert delivery_key("acme", "orders", "m1") != delivery_key("acme", "orders", "m1", test=True)


@pytest.fixture
def hooked(make_api: Callable[..., Api]) -> Api:
    hooks = HookConfig(
        {"api_hook": Hook(Verifier([KEY, OLD_KEY]), "acme"), "api_slow": Hook(Verifier([KEY]), "acme")},
    )
    return make_api(hooks=hooks)


def _post(api: Api, path: str, body: bytes = BODY, **kw: Any) -> Any:
    headers = kw.pop("headers", None) or _headers(body, **kw)
    return api.http.post(path, content=body, headers=headers)


def test_a_delivery_starts_one_run(hooked: Api) -> None:
    headers = _headers(BODY, msg_id="msg_once")
    first = hooked.http.post("/hooks/api_hook/orders/created", content=BODY, headers=headers)
    assert first.status_code == 202, first.text
    run_id = first.json()["executionId"]
    assert first.json()["statusUrl"] == f"/api/executions/{run_id}/status" and first.json()["created"]
    reader = hooked.auth("acme", "read")
    status = hooked.wait_status(run_id, reader, lambda b: b["status"] == "completed")
    assert status["output"] == {"body": {"order": 42}, "path": "orders/created"}
    assert status["trigger"] == "webhook" and status["organization_id"] == "acme"
    assert "webhook-signature" not in status["trigger_data"]["headers"]
    for _ in range(3):  # the provider retries the same delivery
        again = hooked.http.post("/hooks/api_hook/orders/created", content=BODY, headers=headers)
        assert again.status_code == 202 and again.json()["executionId"] == run_id and not again.json()["created"]
    runs = hooked.http.get("/api/executions", params={"trigger": "webhook"}, headers=reader).json()["runs"]
    assert [r["id"] for r in runs] == [run_id]
    rotated = _post(hooked, "/hooks/api_hook/x", secret=OLD_KEY)
    assert rotated.status_code == 202 and rotated.json()["executionId"] != run_id


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_negative_table_over_http(hooked: Api) -> None:
    for case, headers, body, words in _negative():
        reply = hooked.http.post("/hooks/api_hook/x", content=body, headers=headers)
        assert reply.status_code == 401, case
        assert reply.headers["content-type"] == "application/problem+json" and words in reply.json()["detail"]
    for missing in MISSING:
        headers = {k: v for k, v in _headers(BODY).items() if k != missing}
        reply = hooked.http.post("/hooks/api_hook/x", content=BODY, headers=headers)
        assert reply.status_code == 400 and missing in reply.json()["detail"]
    unknown = _post(hooked, "/hooks/api_flow/x")
    assert unknown.status_code == 404 and "no webhook" in unknown.json()["detail"]
    not_json = _post(hooked, "/hooks/api_hook/x", body=b"{oops")
    assert not_json.status_code == 400 and not_json.json()["field"] == "body"
    runs = hooked.http.get("/api/executions", headers=hooked.auth("acme", "read")).json()["runs"]
    assert runs == []  # nothing was started by any of them
    metrics = hooked.http.get("/metrics").text
    assert "autoflow_webhooks_rejected_total" in metrics


def test_wait_for_the_result_or_get_the_id(hooked: Api) -> None:
    done = _post(hooked, "/hooks/api_hook/sync?wait=20")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["output"]["body"] == {"order": 42}
    slow_body = json.dumps({}).encode()
    pending = _post(hooked, "/hooks/api_slow/x?wait=0.3", body=slow_body)
    assert pending.status_code == 202 and pending.json()["status"] in ("pending", "running")
    hooked.http.delete(f"/api/executions/{pending.json()['executionId']}", headers=hooked.auth())
    bad_wait = _post(hooked, "/hooks/api_hook/x?wait=600")
    assert bad_wait.status_code == 422 and bad_wait.json()["field"] == "query.wait"


def test_test_mode(hooked: Api) -> None:
    headers = _headers(BODY, msg_id="msg_both")
    test = hooked.http.post("/hooks-test/api_hook/x", content=BODY, headers=headers)
    assert test.status_code == 200 and test.json()["status"] == "completed"  # waits by default
    prod = hooked.http.post("/hooks/api_hook/x", content=BODY, headers=headers)
    assert prod.status_code == 202 and prod.json()["executionId"] != test.json()["executionId"]
    info = hooked.client.status(test.json()["executionId"])
    assert info.trigger == "webhook_test"


def test_config_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps({"orders": {"secrets": [KEY], "organization_id": "acme"}}))
    config = Config.from_settings(af.Settings(webhooks_file=path, webhook_secret=f"{KEY} {OLD_KEY}"))
    orders, other = config.get("orders"), config.get("anything")
    assert orders is not None and orders.organization_id == "acme"
    assert other is not None and other.organization_id is None
    single = Config.from_settings(af.Settings(webhook_secret=KEY, webhook_organization="solo")).get("x")
    assert single is not None and single.organization_id == "solo"
    assert KEY not in repr(config)
    assert Config.from_settings(af.Settings()).get("orders") is None
    for bad, words in (("[]", "expected an object"), ('{"o": {"secrets": []}}', "non-empty list"), ("{", "not JSON")):
        path.write_text(bad)
        with pytest.raises(af.AutoflowError, match=words):
            Config.from_settings(af.Settings(webhooks_file=path))


def test_concurrent_retries_of_one_delivery_start_one_run(hooked: Api) -> None:
    headers = _headers(BODY, msg_id="msg_storm")
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: httpx.post(f"{hooked.url}/hooks/api_hook/x", content=BODY, headers=headers), range(16))
        )
    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["executionId"] for r in replies}) == 1
    assert sum(r.json()["created"] for r in replies) == 1
    runs = hooked.http.get("/api/executions", headers=hooked.auth("acme", "read")).json()["runs"]
    assert len(runs) == 1
