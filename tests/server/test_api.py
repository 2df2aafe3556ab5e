"""The REST API over a real socket: the seed's endpoints, tenants, errors, limits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import Api


def _execute(api: Api, workflow: str = "api_flow", org: str = "acme", **body: object) -> httpx.Response:
    return api.http.post("/api/executions/execute", json={"workflowId": workflow, **body}, headers=api.auth(org))


def test_the_seed_endpoints(api: Api) -> None:
    reply = _execute(api, inputs={"a": 4}, triggerData={"source": "crm"}, organizationId="acme")
    assert reply.status_code == 202, reply.text
    started = reply.json()
    run_id = started["executionId"]
    assert started["created"] is True and reply.headers["location"] == f"/api/executions/{run_id}/status"
    headers = api.auth(scopes="read")
    body = api.wait_status(run_id, headers, lambda b: b["status"] == "completed")
    assert body["output"] == 10 and body["organization_id"] == "acme" and body["user_id"] == "u1"
    assert body["trigger"] == "api" and body["trigger_data"] == {"source": "crm"}
    assert set(body["nodes"]) == {"api_add", "api_double"}

    first = api.http.get(f"/api/executions/{run_id}/logs", params={"limit": 2}, headers=headers).json()
    assert len(first["logs"]) == 2 and first["finished"] is True
    rest = api.http.get(f"/api/executions/{run_id}/logs", params={"after": first["next"]}, headers=headers).json()
    ids = [e["id"] for e in first["logs"] + rest["logs"]]
    assert ids == sorted(set(ids)) and any(e["message"] == "doubling" for e in rest["logs"] + first["logs"])

    stats = api.http.get("/api/executions/stats", headers=headers).json()
    assert set(stats) == {"workflow", "node"} and stats["workflow"]["completed"] >= 1
    assert set(stats["node"]) == {"waiting", "active", "completed", "failed"}

    done = api.http.delete(f"/api/executions/{run_id}", headers=api.auth())
    assert done.status_code == 200 and done.json()["status"] == "completed"  # already over


def test_cancel_pause_resume(api: Api) -> None:
    run_id = _execute(api, "api_slow").json()["executionId"]
    headers = api.auth()
    api.wait_status(run_id, headers, lambda b: b["nodes"]["api_nap"]["status"] == "running")
    paused = api.http.post(f"/api/executions/{run_id}/pause", headers=headers)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = api.http.post(f"/api/executions/{run_id}/resume", headers=headers)
    assert resumed.json()["status"] == "running"
    cancelled = api.http.delete(f"/api/executions/{run_id}", headers=headers)
    assert cancelled.status_code in (200, 202)
    api.wait_status(run_id, headers, lambda b: b["status"] == "cancelled")


def test_runs_list_filters_and_pages(api: Api) -> None:
    ids = [_execute(api, inputs={"a": i}).json()["executionId"] for i in range(3)]
    other = _execute(api, "api_slow", org="beta").json()["executionId"]
    headers = api.auth(scopes="read")
    listed = api.http.get("/api/executions", headers=headers).json()
    assert [r["id"] for r in listed["runs"]] == ids[::-1] and listed["next"] is None
    page = api.http.get("/api/executions", params={"limit": 2}, headers=headers).json()
    assert [r["id"] for r in page["runs"]] == ids[:0:-1] and page["next"] == ids[1]
    older = api.http.get("/api/executions", params={"limit": 2, "before": page["next"]}, headers=headers).json()
    assert [r["id"] for r in older["runs"]] == ids[:1]
    none = api.http.get("/api/executions", params={"workflow": "api_slow"}, headers=headers).json()
    assert none["runs"] == []  # beta's run is not acme's
    beta = api.http.get("/api/executions", params={"trigger": "api"}, headers=api.auth("beta", "read")).json()
    assert [r["id"] for r in beta["runs"]] == [other]
    api.http.delete(f"/api/executions/{other}", headers=api.auth("beta"))


def test_another_tenants_run_is_not_found(api: Api) -> None:
    run_id = _execute(api, org="acme").json()["executionId"]
    beta = api.auth("beta", "admin")
    for method, path in (
        ("GET", f"/api/executions/{run_id}/status"),
        ("GET", f"/api/executions/{run_id}/logs"),
        ("DELETE", f"/api/executions/{run_id}"),
        ("POST", f"/api/executions/{run_id}/pause"),
        ("GET", "/api/executions/0000000000000000nosuchrun/status"),
    ):
        reply = api.http.request(method, path, headers=beta)
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["detail"].startswith("no execution")
    assert api.http.get(f"/api/executions/{run_id}/status", headers=api.auth("acme", "read")).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"workflowId": "api_flow", "organizationId": "beta"}, 403, "organizationId", "token's organization"),
        ({"workflowId": "nope"}, 404, None, "'nope'"),
        ({"workflowId": "api_flow", "inputs": {"a": "x"}}, 422, None, "input 'a'"),
        ({"workflowId": "api_flow", "inputs": {"zzz": 1}}, 422, None, "zzz"),
        ({"inputs": {}}, 422, "body.workflowId", "Field required"),
        ({"workflowId": "api_flow", "surprise": 1}, 422, "body.surprise", "Extra inputs"),
        ({"workflowId": "api_flow", "priority": "high"}, 422, "body.priority", "integer"),
        ({"workflowId": ""}, 422, "body.workflowId", "at least 1"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    api: Api, body: dict[str, object], status: int, field: str | None, words: str
) -> None:
    reply = api.http.post("/api/executions/execute", json=body, headers=api.auth())
    assert reply.status_code == status, reply.text
    problem = reply.json()
    assert problem["status"] == status and words in problem["detail"]
    if field:
        assert problem["field"] == field
    listed = api.http.get("/api/executions", headers=api.auth()).json()
    assert listed["runs"] == []  # nothing half-created


def test_malformed_requests(api: Api) -> None:
    headers = {**api.auth(), "content-type": "application/json"}
    broken = api.http.post("/api/executions/execute", content=b'{"workflowId": ', headers=headers)
    assert broken.status_code == 422 and broken.json()["field"].startswith("body")
    nan = api.http.post(
        "/api/executions/execute", content=b'{"workflowId": "api_flow", "triggerData": NaN}', headers=headers
    )
    assert nan.status_code == 422 and "JSON" in nan.json()["detail"]
    bad_id = api.http.get("/api/executions/bad id!/status", headers=headers)
    assert bad_id.status_code == 422 and bad_id.json()["field"] == "path.run_id"
    assert api.http.get("/api/nothing", headers=headers).status_code == 404
    wrong_method = api.http.put("/api/executions/stats", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.json()["title"] == "Method Not Allowed"


def test_read_only_tokens_cannot_execute(api: Api) -> None:
    reply = api.http.post("/api/executions/execute", json={"workflowId": "api_flow"}, headers=api.auth(scopes="read"))
    assert reply.status_code == 403 and "'execute' scope" in reply.json()["detail"]
    none = api.http.get("/api/executions", headers=api.auth(scopes="bogus"))
    assert none.status_code == 403


def test_rate_limit_per_token(make_api: Callable[..., Api]) -> None:
    api = make_api(api_rate_limit="3/m", api_execute_rate_limit="1/m")
    token = api.auth(scopes="read")
    codes = [api.http.get("/api/executions", headers=token).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = api.http.get("/api/executions", headers=token)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in limited.json()["detail"]
    other = api.http.get("/api/executions", headers=api.auth("acme", "read", sub="u2"))
    assert other.status_code == 200  # another token has its own budget
    writer = api.auth("acme")  # one token: a token minted a second later is another budget
    execute = {"workflowId": "api_flow"}
    assert api.http.post("/api/executions/execute", json=execute, headers=writer).status_code == 202
    assert api.http.post("/api/executions/execute", json=execute, headers=writer).status_code == 429


def test_request_size_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(api_max_body_bytes=2000)
    big = {"workflowId": "api_flow", "triggerData": "x" * 5000}
    reply = api.http.post("/api/executions/execute", json=big, headers=api.auth())
    assert reply.status_code == 413 and "2000 bytes" in reply.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield json.dumps(big).encode()[:1500]
        yield json.dumps(big).encode()[1500:]

    chunked = api.http.post(
        "/api/executions/execute", content=chunks(), headers={**api.auth(), "content-type": "application/json"}
    )
    assert chunked.status_code == 413
    small = api.http.post(
        "/api/executions/execute",
        content=iter([b'{"workflowId": "api_flow"}']),
        headers={**api.auth(), "content-type": "application/json"},
    )
    assert small.status_code == 202, small.text


def test_health_and_openapi(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["backend"] in ("sqlite", "redis")
    schema = api.http.get("/openapi.json").json()
    for path in (
        "/api/executions/execute",
        "/api/executions/{run_id}/status",
        "/api/executions/{run_id}/logs",
        "/api/executions/{run_id}",
        "/api/executions/stats",
        "/api/workflows",
        "/api/workflows/{workflow_id}/execute",
        "/hooks/{workflow}/{path}",
        "/metrics",
    ):
        assert path in schema["paths"], path
    assert "Problem" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_tokens_expire_while_in_use(api: Api) -> None:
    now = int(time.time())
    short = api.auth(exp=now - 30)
    reply = api.http.get("/api/executions", headers=short)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"


def test_logs_and_run_controls_check_the_owner_without_reading_every_node(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _execute(api, inputs={"a": 1}).json()["executionId"]
    api.wait_status(run_id, api.auth(scopes="read"), lambda b: b["status"] == "completed")
    store, whole = api.client.backend.store, []
    read = store.get_run
    monkeypatch.setattr(store, "get_run", lambda rid: whole.append(rid) or read(rid))
    url = f"/api/executions/{run_id}"
    for org, code in (("beta", 404), ("acme", 200)):
        logs = api.http.get(f"{url}/logs", headers=api.auth(org, "read"))
        assert logs.status_code == code, logs.text
    assert logs.json()["finished"] is True and logs.json()["logs"]
    for method, path in (("POST", "/pause"), ("POST", "/resume"), ("DELETE", "")):
        assert api.http.request(method, url + path, headers=api.auth("beta")).status_code == 404
    assert api.http.delete(url, headers=api.auth()).json()["status"] == "completed"  # had ended
    assert whole == []  # the owner's check read the run's own fields only


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_tenants_never_cross(api: Api) -> None:
    """Random organizations and runs: a token sees exactly its organization's runs."""
    owners: dict[str, str] = {}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(creator=st.sampled_from(["acme", "beta", "gamma"]), reader=st.sampled_from(["acme", "beta", "gamma"]))
    def check(creator: str, reader: str) -> None:
        run_id = _execute(api, org=creator).json()["executionId"]
        owners[run_id] = creator
        seen = api.http.get(f"/api/executions/{run_id}/status", headers=api.auth(reader, "read"))
        assert seen.status_code == (200 if reader == creator else 404)
        listed = api.http.get("/api/executions", params={"limit": 500}, headers=api.auth(reader, "read")).json()
        assert {r["id"] for r in listed["runs"]} == {r for r, o in owners.items() if o == reader}

    check()
