"""Workflows stored by id over HTTP: create, read, version, execute with Idempotency-Key."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api
from tests.server.flows import api_flow


def _definition(b: int = 1) -> dict[str, Any]:
    data = api_flow.to_dict()
    data["name"] = "stored_api_flow"
    data["nodes"][0]["config"]["b"] = b
    return data


def test_create_read_update_execute(api: Api) -> None:
    admin = api.auth(scopes="admin")
    made = api.http.post("/api/workflows", json={"id": "etl", "definition": _definition()}, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["version"] == 1 and made.headers["location"] == "/api/workflows/etl"
    again = api.http.post("/api/workflows", json={"id": "etl", "definition": _definition()}, headers=admin)
    assert again.status_code == 409

    updated = api.http.put("/api/workflows/etl", json={"definition": _definition(10)}, headers=admin)
    assert updated.status_code == 200 and updated.json()["version"] == 2
    stale = api.http.put("/api/workflows/etl", json={"definition": _definition()}, headers={**admin, "If-Match": "1"})
    assert stale.status_code == 409 and "version 2" in stale.json()["detail"]
    fresh = api.http.put(
        "/api/workflows/etl", json={"definition": _definition(5)}, headers={**admin, "If-Match": '"2"'}
    )
    assert fresh.status_code == 200 and fresh.json()["version"] == 3

    reader = api.auth(scopes="read")
    assert api.http.get("/api/workflows/etl", headers=reader).json()["version"] == 3
    v1 = api.http.get("/api/workflows/etl", params={"version": 1}, headers=reader).json()
    assert v1["definition"]["nodes"][0]["config"]["b"] == 1
    assert [w["id"] for w in api.http.get("/api/workflows", headers=reader).json()["workflows"]] == ["etl"]
    assert api.http.get("/api/workflows/etl", headers=api.auth("beta", "admin")).status_code == 404

    run = api.http.post("/api/workflows/etl/execute", json={"inputs": {"a": 1}}, headers=api.auth())
    assert run.status_code == 202
    body = api.wait_status(run.json()["executionId"], reader, lambda b: b["status"] == "completed")
    assert body["output"] == 12 and body["workflow_id"] == "etl" and body["workflow_version"] == 3
    pinned = api.http.post("/api/workflows/etl/execute", json={"inputs": {"a": 1}, "version": 1}, headers=api.auth())
    body = api.wait_status(pinned.json()["executionId"], reader, lambda b: b["status"] == "completed")
    assert body["output"] == 4 and body["workflow_version"] == 1
    by_seed = api.http.post(
        "/api/executions/execute", json={"workflowId": "etl", "inputs": {"a": 0}}, headers=api.auth()
    )
    assert api.wait_status(by_seed.json()["executionId"], reader, lambda b: b["status"] == "completed")["output"] == 10


def test_idempotency_key(api: Api) -> None:
    api.http.post("/api/workflows", json={"id": "once", "definition": _definition()}, headers=api.auth(scopes="admin"))
    headers = {**api.auth(), "Idempotency-Key": "order-42"}
    first = api.http.post("/api/workflows/once/execute", json={"inputs": {"a": 1}}, headers=headers)
    second = api.http.post("/api/workflows/once/execute", json={"inputs": {"a": 1}}, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["executionId"] == second.json()["executionId"] and second.json()["created"] is False
    other = api.http.post("/api/workflows/once/execute", json={"inputs": {"a": 2}}, headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    beta = api.http.post(
        "/api/workflows", json={"id": "once", "definition": _definition()}, headers=api.auth("beta", "admin")
    )
    assert beta.status_code == 201
    theirs = api.http.post(
        "/api/workflows/once/execute",
        json={"inputs": {"a": 1}},
        headers={**api.auth("beta"), "Idempotency-Key": "order-42"},
    )
    assert theirs.status_code == 202 and theirs.json()["executionId"] != first.json()["executionId"]
    runs = api.http.get("/api/executions", params={"workflowId": "once"}, headers=api.auth()).json()["runs"]
    assert len(runs) == 1


def test_a_key_too_long_for_the_organization_is_refused_naming_the_header_and_its_limit(api: Api) -> None:
    """The Idempotency-Key header's limit is what is left of the client's 256 characters
    once the key is put in the organization's own space: every key too long for it gets
    the same 422 naming the header and that limit, and none shows how keys are scoped."""
    api.http.post("/api/workflows", json={"id": "once", "definition": _definition()}, headers=api.auth(scopes="admin"))
    limit = 247  # 251 minus len("acme")
    body = {"inputs": {"a": 1}}
    for key in ("k" * (limit + 1), "k" * 255, "k" * 300):  # 255: what the header schema used to allow
        reply = api.http.post("/api/workflows/once/execute", json=body, headers={**api.auth(), "Idempotency-Key": key})
        assert reply.status_code == 422, reply.text
        problem = reply.json()
        assert problem["field"] == "Idempotency-Key"
        assert problem["detail"] == f"Idempotency-Key is too long: at most {limit} characters (for this organization)"
    tab = api.http.post("/api/workflows/once/execute", json=body, headers={**api.auth(), "Idempotency-Key": "a\tb"})
    assert tab.status_code == 422 and tab.json()["field"] == "Idempotency-Key" and "printable" in tab.json()["detail"]
    assert api.http.get("/api/executions", headers=api.auth()).json()["runs"] == []  # nothing was started
    longest = {**api.auth(), "Idempotency-Key": "k" * limit}
    first = api.http.post("/api/workflows/once/execute", json=body, headers=longest)
    again = api.http.post("/api/workflows/once/execute", json=body, headers=longest)
    assert (first.status_code, again.status_code) == (202, 200), first.text
    assert again.json()["executionId"] == first.json()["executionId"]
    # The bulk endpoint's keys follow the same rule, with the same words.
    many = {"workflowId": "once", "inputs": [{"a": 1}], "idempotencyKeys": ["k" * 300]}
    reply = api.http.post("/api/executions/execute-many", json=many, headers=api.auth())
    assert reply.status_code == 422 and reply.json()["field"] == "idempotencyKeys[0]"
    assert (
        reply.json()["detail"] == f"idempotencyKeys[0] is too long: at most {limit} characters (for this organization)"
    )


def test_an_organization_id_leaving_no_room_for_keys_is_told_so(api: Api) -> None:
    org = "o" * 251  # the key is checked before the workflow is looked up
    reply = api.http.post(
        "/api/workflows/once/execute", json={"inputs": {}}, headers={**api.auth(org), "Idempotency-Key": "k"}
    )
    assert reply.status_code == 422 and reply.json()["field"] == "Idempotency-Key"
    assert "organization's id is too long" in reply.json()["detail"] and "api:" not in reply.json()["detail"]


def test_openapi_documents_the_key_rule_once(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    params = schema["paths"]["/api/workflows/{workflow_id}/execute"]["post"]["parameters"]
    header = next(p for p in params if p["in"] == "header" and p["name"].lower() == "idempotency-key")
    assert "251 characters minus the length of the organization id" in header["description"]
    assert "maxLength" not in str(header["schema"])  # the limit depends on the organization: checked, not in the schema


def test_bad_definitions_and_scopes(api: Api) -> None:
    admin = api.auth(scopes="admin")
    broken = _definition()
    broken["nodes"][1]["type"] = "nowhere:node"
    reply = api.http.post("/api/workflows", json={"id": "bad", "definition": broken}, headers=admin)
    assert reply.status_code == 422 and "nowhere:node" in reply.json()["detail"]
    reply = api.http.post("/api/workflows", json={"id": "bad id", "definition": _definition()}, headers=admin)
    assert reply.status_code == 422 and reply.json()["field"] == "body.id"
    reply = api.http.post("/api/workflows", json={"definition": {"name": 5}}, headers=admin)
    assert reply.status_code == 422
    reply = api.http.post("/api/workflows", json={"id": "x", "definition": _definition()}, headers=api.auth())
    assert reply.status_code == 403 and "'admin' scope" in reply.json()["detail"]
    reply = api.http.put("/api/workflows/x", json={"definition": _definition()}, headers={**admin, "If-Match": "abc"})
    assert reply.status_code == 400 and reply.json()["field"] == "If-Match"
    assert api.http.get("/api/workflows/bad", headers=admin).status_code == 404
    assert api.http.post("/api/workflows/ghost/execute", headers=api.auth()).status_code == 404
    bad_inputs = api.http.post("/api/workflows", json={"id": "ok", "definition": _definition()}, headers=admin)
    assert bad_inputs.status_code == 201
    reply = api.http.post("/api/workflows/ok/execute", json={"inputs": {"a": []}}, headers=api.auth())
    assert reply.status_code == 422 and "input 'a'" in reply.json()["detail"]
