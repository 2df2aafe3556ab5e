"""Many runs in one request: ``/api/executions/execute-many`` and
``/api/workflows/{id}/execute-many`` over a real socket, on SQLite and Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from autoflow.run import Run
from autoflow.server import bulk
from tests.server.conftest import Api
from tests.server.flows import api_flow

MANY = "/api/executions/execute-many"


def _many(api: Api, org: str = "acme", scopes: str = "execute", **body: Any) -> httpx.Response:
    return api.http.post(MANY, json={"workflowId": "api_flow", **body}, headers=api.auth(org, scopes))


def _store(api: Api, workflow_id: str, org: str = "acme") -> None:
    made = api.http.post(
        "/api/workflows", json={"id": workflow_id, "definition": api_flow.to_dict()}, headers=api.auth(org, "admin")
    )
    assert made.status_code == 201, made.text


def _run_ids(api: Api, org: str = "acme") -> list[str]:
    listed = api.http.get("/api/executions", params={"limit": 500}, headers=api.auth(org, "read")).json()
    return [run["id"] for run in listed["runs"]]


def test_runs_start_in_order_with_their_inputs(api: Api) -> None:
    reply = _many(api, inputs=[{"a": i} for i in range(6)], triggerData={"batch": 7}, priority=3)
    assert reply.status_code == 202, reply.text
    started = reply.json()["executions"]
    assert len(started) == 6 and len({e["executionId"] for e in started}) == 6
    assert all(e["created"] and e["statusUrl"] == f"/api/executions/{e['executionId']}/status" for e in started)
    headers = api.auth(scopes="read")
    for i, execution in enumerate(started):
        body = api.wait_status(execution["executionId"], headers, lambda b: b["status"] == "completed")
        assert body["inputs"] == {"a": i} and body["output"] == 2 * (i + 1)
        assert body["organization_id"] == "acme" and body["user_id"] == "u1" and body["priority"] == 3
        assert body["trigger"] == "api" and body["trigger_data"] == {"batch": 7}
    assert sorted(_run_ids(api)) == sorted(e["executionId"] for e in started)


def test_stored_workflow_and_idempotency_keys(api: Api) -> None:
    _store(api, "etl")
    path = "/api/workflows/etl/execute-many"
    body = {"inputs": [{"a": 1}, {"a": 2}], "idempotencyKeys": ["k1", "k2"]}
    first = api.http.post(path, json=body, headers=api.auth())
    assert first.status_code == 202, first.text
    ids = [e["executionId"] for e in first.json()["executions"]]
    again = api.http.post(path, json=body, headers=api.auth())
    assert again.status_code == 200  # every run was found
    assert [(e["executionId"], e["created"]) for e in again.json()["executions"]] == [(i, False) for i in ids]

    more = {"inputs": [{"a": 3}, {"a": 2}], "idempotencyKeys": ["k3", "k2"]}
    mixed = api.http.post(path, json=more, headers=api.auth()).json()["executions"]
    assert [e["created"] for e in mixed] == [True, False] and mixed[1]["executionId"] == ids[1]
    single = api.http.post(
        "/api/workflows/etl/execute", json={"inputs": {"a": 1}}, headers={**api.auth(), "Idempotency-Key": "k1"}
    )
    assert single.status_code == 200 and single.json()["executionId"] == ids[0]  # one key space

    before = _run_ids(api)
    clash = {"inputs": [{"a": 9}, {"a": 99}], "idempotencyKeys": ["k9", "k1"]}
    reply = api.http.post(path, json=clash, headers=api.auth())
    assert reply.status_code == 409 and reply.json()["field"] == "idempotencyKeys[1]"
    assert _run_ids(api) == before  # k9 was not started either

    info = api.wait_status(ids[1], api.auth(scopes="read"), lambda b: b["status"] == "completed")
    assert info["workflow_id"] == "etl" and info["workflow_version"] == 1 and info["output"] == 6


def test_the_answer_holds_each_runs_status_read_in_one_go(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is what it was when each run's status was read on its own (the store's
    status of each run, in the order of the items), read once for all the runs."""
    api = make_api(workflow_concurrency=2)  # two runs start, the others wait: both statuses show
    store = api.client.backend.store
    reads: list[tuple[str, int]] = []
    one, many = store.run_status, store.run_statuses
    monkeypatch.setattr(store, "run_status", lambda run_id: reads.append(("run_status", 1)) or one(run_id))
    monkeypatch.setattr(store, "run_statuses", lambda ids: reads.append(("run_statuses", len(ids))) or many(ids))
    keys = [f"nap-{i}" for i in range(4)]
    body = {"workflowId": "api_slow", "inputs": [{"seconds": 60}] * 4, "idempotencyKeys": keys}
    first = _many(api, **body)
    assert first.status_code == 202, first.text
    ids = [e["executionId"] for e in first.json()["executions"]]
    # Nothing changes now (the started runs nap for a minute): one read per run is the reference.
    expected = [one(run_id).value for run_id in ids]  # type: ignore[union-attr]
    assert sorted(expected) == ["pending", "pending", "running", "running"]

    def answer(created: bool) -> dict[str, Any]:
        return {
            "executions": [
                {"executionId": i, "status": s, "statusUrl": f"/api/executions/{i}/status", "created": created}
                for i, s in zip(ids, expected, strict=True)
            ]
        }

    assert first.json() == answer(True)
    again = _many(api, **body)
    assert again.status_code == 200 and again.json() == answer(False)
    assert reads == [("run_statuses", 4), ("run_statuses", 4)]  # no read per run
    for run_id in ids:
        api.http.delete(f"/api/executions/{run_id}", headers=api.auth())


_DIFFER = "was used with another request (workflow, inputs or triggerData differ)"
_RACED = "; a request racing with this one made it, and the other runs of this request started"


def _count_reads(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record the store's reads of whole runs (``get_run``) and of summaries."""
    store = api.client.backend.store
    reads: list[tuple[str, int]] = []
    whole, summaries = store.get_run, store.run_summaries
    monkeypatch.setattr(store, "get_run", lambda run_id: reads.append(("get_run", 1)) or whole(run_id))
    monkeypatch.setattr(store, "run_summaries", lambda ids: reads.append(("run_summaries", len(ids))) or summaries(ids))
    return reads


def test_found_keys_are_read_in_one_go_and_checked_as_before(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys that name earlier runs: the same body answers those runs (200), read once for
    all without their nodes; another body (inputs, triggerData, workflow, stored
    workflow) is a 409 naming the first item that differs, and creates nothing."""
    _store(api, "etl")
    reads = _count_reads(api, monkeypatch)
    keys = [f"found-{i}" for i in range(5)]
    body = {"inputs": [{"a": i} for i in range(5)], "idempotencyKeys": keys, "triggerData": {"batch": [1, None]}}
    first = _many(api, **body)
    assert first.status_code == 202, first.text
    ids = [e["executionId"] for e in first.json()["executions"]]
    reads.clear()
    again = _many(api, **body)
    assert again.status_code == 200, again.text
    assert [(e["executionId"], e["created"]) for e in again.json()["executions"]] == [(i, False) for i in ids]
    assert reads == [("run_summaries", 5)]  # not a whole run per key

    before = _run_ids(api)
    inputs = [{"a": i} for i in range(5)]
    for changes, differs in [
        ({"inputs": [*inputs[:3], {"a": 30}, inputs[4]]}, 3),  # items 0 to 2 are found, the same
        ({"inputs": [{"a": 1}, *inputs[1:]]}, 0),
        ({"triggerData": {"batch": [1, 2]}}, 0),
        ({"triggerData": None}, 0),
        ({"workflowId": "api_retry", "inputs": [{}] * 5}, 0),  # another workflow
        ({"workflowId": "etl"}, 0),  # the same definition, stored: another workflow id
    ]:
        reply = _many(api, **{**body, **changes})
        assert reply.status_code == 409, (changes, reply.text)
        assert reply.json()["detail"] == f"idempotencyKeys[{differs}] {_DIFFER}"
        assert reply.json()["field"] == f"idempotencyKeys[{differs}]"
    stored = api.http.post("/api/workflows/etl/execute-many", json=body, headers=api.auth())
    assert stored.status_code == 409 and stored.json()["field"] == "idempotencyKeys[0]"
    assert _run_ids(api) == before  # nothing was created by any of them
    assert ("get_run", 1) not in reads


@pytest.mark.parametrize("same", [True, False])
def test_runs_a_racing_request_made_are_checked_in_one_read(
    api: Api, monkeypatch: pytest.MonkeyPatch, same: bool
) -> None:
    """A key whose run a racing request made between this request's check and its
    submission (here: the check finds nothing, as if it ran first) is checked after the
    submission, the runs so made read once for all: the same body finds it, another is a
    409 that says the other runs started."""
    first = _many(api, inputs=[{"a": 1}, {"a": 2}], idempotencyKeys=["r0", "r1"])
    assert first.status_code == 202, first.text
    made = [e["executionId"] for e in first.json()["executions"]]
    monkeypatch.setattr(bulk, "_conflicts", lambda *args: set())
    reads = _count_reads(api, monkeypatch)
    inputs = [{"a": 3}, {"a": 1}, {"a": 2 if same else 20}]
    reply = _many(api, inputs=inputs, idempotencyKeys=["r-new", "r0", "r1"])
    assert reads == [("run_summaries", 2)]
    if same:
        assert reply.status_code == 202, reply.text
        assert [e["created"] for e in reply.json()["executions"]] == [True, False, False]
        assert [e["executionId"] for e in reply.json()["executions"]][1:] == made
    else:
        assert reply.status_code == 409, reply.text
        assert reply.json()["detail"] == f"idempotencyKeys[2] {_DIFFER}{_RACED}"
        assert reply.json()["field"] == "idempotencyKeys[2]"
    assert len(_run_ids(api)) == 3  # the new key's run started either way


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_racing_requests_run_gone_meanwhile_is_a_404(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run a racing request made is gone when it is checked (past retention): a 404
    naming it, as when it was read whole."""
    made = _many(api, inputs=[{"a": 1}], idempotencyKeys=["gone"]).json()["executions"][0]["executionId"]
    store = api.client.backend.store
    monkeypatch.setattr(bulk, "_conflicts", lambda *args: set())
    monkeypatch.setattr(store, "run_summaries", lambda ids: [None] * len(ids))
    monkeypatch.setattr(store, "get_run", lambda run_id: None)
    reply = _many(api, inputs=[{"a": 1}], idempotencyKeys=["gone"])
    assert reply.status_code == 404, reply.text
    assert reply.json()["detail"].startswith(f"no run {made!r} on ")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("many", [True, False])
def test_a_run_gone_before_the_answer_is_a_404_as_on_execute(
    api: Api, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    """A run that no longer exists when the answer is made (past retention) is a 404
    naming it, on execute-many as on execute (the same problem)."""
    client = api.client
    if many:
        real_many = client.execute_many
        monkeypatch.setattr(client, "execute_many", lambda *a, **k: [*real_many(*a, **k), Run(client, "gone")])
        reply = _many(api, inputs=[{"a": 1}])
    else:
        monkeypatch.setattr(client, "execute", lambda *a, **k: Run(client, "gone"))
        reply = api.http.post("/api/executions/execute", json={"workflowId": "api_flow"}, headers=api.auth())
    assert reply.status_code == 404, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["detail"].startswith("no run 'gone' on ")


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"inputs": [{"a": 1}, {"a": 2}, {"a": 3}, {"a": "x"}]}, 422, "inputs[3]", "inputs[3]: "),
        ({"inputs": [{"a": 1}, {"zzz": 1}]}, 422, "inputs[1]", "zzz"),
        ({"inputs": [{"a": 1}, 5]}, 422, "body.inputs.1", "valid dictionary"),
        ({"inputs": []}, 422, "body.inputs", "at least 1"),
        ({"inputs": [{}], "idempotencyKeys": ["a", "b"]}, 422, "idempotencyKeys", "2 keys for 1 items"),
        ({"inputs": [{}, {}], "idempotencyKeys": ["a", "a"]}, 422, "idempotencyKeys[1]", "repeats"),
        ({"inputs": [{}], "idempotencyKeys": ["tab\there"]}, 422, "idempotencyKeys[0]", "printable"),
        ({"inputs": [{}], "organizationId": "beta"}, 403, "organizationId", "token's organization"),
        ({"inputs": [{}], "workflowId": "nope"}, 404, None, "'nope'"),
        ({"inputs": [{}], "priority": 5000}, 422, "body.priority", "1000"),
    ],
)
def test_a_bad_request_creates_nothing(
    api: Api, body: dict[str, Any], status: int, field: str | None, words: str
) -> None:
    reply = _many(api, **body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert words in problem["detail"] and problem.get("field") == field
    assert _run_ids(api) == []


def test_auth_is_required_and_tenants_stay_apart(api: Api) -> None:
    body = {"workflowId": "api_flow", "inputs": [{"a": 1}]}
    assert api.http.post(MANY, json=body).status_code == 401
    assert api.http.post(MANY, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    refused = _many(api, scopes="read", inputs=[{"a": 1}])
    assert refused.status_code == 403 and "'execute' scope" in refused.json()["detail"]
    _store(api, "mine")
    theirs = api.http.post("/api/workflows/mine/execute-many", json={"inputs": [{}]}, headers=api.auth("beta"))
    assert theirs.status_code == 404  # acme's stored workflow does not exist for beta
    assert _run_ids(api) == [] and _run_ids(api, "beta") == []

    acme = _many(api, inputs=[{"a": 1}], idempotencyKeys=["same"]).json()["executions"][0]
    beta = _many(api, "beta", inputs=[{"a": 1}], idempotencyKeys=["same"]).json()["executions"][0]
    assert beta["created"] and beta["executionId"] != acme["executionId"]  # keys are per organization
    assert api.http.get(beta["statusUrl"], headers=api.auth("acme", "read")).status_code == 404
    assert _run_ids(api) == [acme["executionId"]] and _run_ids(api, "beta") == [beta["executionId"]]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_item_and_body_limits(make_api: Callable[..., Api]) -> None:
    api = make_api(api_max_bulk_items=3, api_max_body_bytes=2000)
    reply = _many(api, inputs=[{"a": i} for i in range(4)])
    assert reply.status_code == 413 and reply.json()["field"] == "inputs"
    assert "at most 3 runs per request (AUTOFLOW_API_MAX_BULK_ITEMS)" in reply.json()["detail"]
    big = _many(api, inputs=[{"a": 1}], triggerData="x" * 3000)
    assert big.status_code == 413 and "2000 bytes" in big.json()["detail"]
    assert _run_ids(api) == []
    assert _many(api, inputs=[{"a": i} for i in range(3)]).status_code == 202


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_rate_limit_counts_runs(make_api: Callable[..., Api]) -> None:
    api = make_api(api_execute_rate_limit="3/m")
    headers = api.auth()
    body = {"workflowId": "api_flow", "inputs": [{"a": 1}] * 51}  # two tokens
    assert api.http.post(MANY, json=body, headers=headers).status_code == 202
    limited = api.http.post(MANY, json=body, headers=headers)  # one token left
    assert limited.status_code == 429 and "rate limit" in limited.json()["detail"]
    assert int(limited.headers["retry-after"]) >= 20  # time for the two tokens it needs
    assert len(_run_ids(api)) == 51
    huge = make_api(api_execute_rate_limit="1/m")  # a request never costs more than a full bucket
    assert huge.http.post(MANY, json={**body, "inputs": [{}] * 200}, headers=huge.auth(sub="u2")).status_code == 202


def test_a_refused_request_takes_none_of_its_runs_tokens(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs' tokens are taken in one store call, all or none: a refused request spent
    only the token every request takes, its Retry-After is the time until the bucket holds
    the whole request, and a smaller request still fits in what it left."""
    monkeypatch.setattr(bulk, "RUNS_PER_TOKEN", 1)  # a token per run: small requests
    api = make_api(api_execute_rate_limit="10/m")  # 6 s a token
    store = api.client.backend.store
    taken: list[int] = []
    take = store.take_token

    def counted(key: str, count: int, per: float, *, tokens: int = 1) -> float:
        taken.append(tokens)
        return take(key, count, per, tokens=tokens)

    monkeypatch.setattr(store, "take_token", counted)
    headers = api.auth()  # one token: one bucket

    def many(runs: int) -> httpx.Response:
        return api.http.post(MANY, json={"workflowId": "api_flow", "inputs": [{"a": 1}] * runs}, headers=headers)

    assert many(6).status_code == 202  # 4 tokens left
    assert taken == [1, 5]  # the request's first token, then the rest in one call
    refused = many(6)  # takes 1 (3 left); 5 more are refused
    assert refused.status_code == 429, refused.text
    assert taken == [1, 5, 1, 5]
    wait = float(refused.json()["detail"].rsplit("retry after ", 1)[1].rstrip("s"))
    assert 17.0 < wait <= 18.0  # 2 tokens short, and the one it took: 3 * 6 s
    assert refused.headers["retry-after"] == "18"
    assert many(3).status_code == 202  # 1 + 2 of the 3 left
    assert len(_run_ids(api)) == 9
    assert many(1).status_code == 429  # now the bucket is empty


def test_openapi_documents_the_models(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    for path, model in (
        (MANY, "ExecuteMany"),
        ("/api/workflows/{workflow_id}/execute-many", "ExecuteStoredMany"),
    ):
        post = schema["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("Executions")
        assert {"401", "403", "413", "422", "429"} <= set(post["responses"])
    items = schema["components"]["schemas"]["Executions"]["properties"]["executions"]["items"]
    assert items["$ref"].endswith("Execution")
