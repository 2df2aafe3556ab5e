"""condition_if, switch, validation, error_handler and retry."""

from __future__ import annotations

from typing import Any

import pytest

import autoflow as af
from autoflow.nodes import NodeError, condition_if, retry, switch, validation
from tests.nodes.util import one_node

R = dict[str, Any]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"left": 5, "operator": "gt", "right": 3, "type": "number"}, True),
        ({"left": 5, "operator": "lte", "right": 3}, False),
        ({"left": "Ana", "operator": "equals", "right": "Ana", "type": "string"}, True),
        ({"left": "abc", "operator": "contains", "right": "b"}, True),
        ({"left": [1, 2], "operator": "contains", "right": 2}, True),
        ({"left": "x@shop.test", "operator": "ends_with", "right": "@shop.test"}, True),
        ({"left": "A-12", "operator": "regex", "right": r"^A-\d+$"}, True),
        ({"left": "b", "operator": "in", "right": ["a", "b"]}, True),
        ({"left": None, "operator": "exists"}, False),
        ({"left": [], "operator": "empty"}, True),
        ({"left": True, "operator": "is_true"}, True),
        ({"left": [1, 2, 3], "operator": "length_gt", "right": 2}, True),
        ({"left": "2026-11-30T10:00:00Z", "operator": "gt", "right": "2026-11-29", "type": "datetime"}, True),
    ],
)
def test_operators(rule: R, expected: bool) -> None:
    assert condition_if([rule]) is expected


def test_strict_and_loose_type_validation() -> None:
    rule = {"left": "12", "operator": "gt", "right": 3, "type": "number"}
    with pytest.raises(NodeError, match=r"conditions\[0\]\.left.*not a number.*strict=false"):
        condition_if([rule])
    assert condition_if([rule], strict=False) is True
    assert condition_if([{"left": "yes", "operator": "is_true"}], strict=False) is True
    with pytest.raises(NodeError, match="does not convert"):
        condition_if([{"left": "many", "operator": "gt", "right": 1, "type": "number"}], strict=False)


def test_and_or_and_case() -> None:
    a = {"left": "ANA", "operator": "equals", "right": "ana"}
    b = {"left": 1, "operator": "equals", "right": 1}
    assert condition_if([a, b]) is False and condition_if([a, b], combinator="or") is True
    assert condition_if([a], case_sensitive=False) is True


def test_bad_rules_are_refused_when_the_definition_is_built() -> None:
    with pytest.raises(af.WorkflowError, match="operator"):
        one_node("condition_if", {"conditions": [{"left": 1, "operator": "bigger", "right": 0}]})


def test_a_json_branch_on_condition_if(run_client: af.Client) -> None:
    wf = af.Workflow.from_dict(
        {
            "name": "branching",
            "inputs": {"total": {"type": "number"}},
            "nodes": [
                {
                    "id": "big",
                    "type": "condition_if",
                    "config": {
                        "conditions": [{"left": {"$input": "total"}, "operator": "gt", "right": 100, "type": "number"}]
                    },
                },
                {"id": "vip", "type": "clone", "config": {"data": "vip"}, "when": {"node": "big", "value": True}},
                {"id": "std", "type": "clone", "config": {"data": "standard"}, "when": {"node": "big", "value": False}},
                {
                    "id": "out",
                    "type": "data_transform",
                    "config": {"expression": "[vip, std] | [?@] | [0]"},
                    "options": {"trigger": "none_failed"},
                },
            ],
            "edges": [
                {"source": "vip", "target": "out", "input": "data", "index": "vip"},
                {"source": "std", "target": "out", "input": "data", "index": "std"},
            ],
            "output": "out",
        }
    )
    assert run_client.execute(wf, total=250).result(timeout=30) == "vip"
    info = run_client.execute(wf, total=5).wait(timeout=30)
    assert info.output == "standard" and info.nodes["vip"].status is af.NodeStatus.SKIPPED


def test_switch() -> None:
    cases = [
        {"output": "urgent", "conditions": [{"left": 9, "operator": "gte", "right": 8}]},
        {"output": "high", "conditions": [{"left": 9, "operator": "gte", "right": 5}]},
    ]
    assert switch(cases) == {"output": "urgent", "outputs": ["urgent"], "index": 0}
    assert switch(cases, all_matches=True)["outputs"] == ["urgent", "high"]
    low = [{"output": "x", "conditions": [{"left": 1, "operator": "gt", "right": 5}]}]
    assert switch(low, fallback="other") == {"output": "other", "outputs": ["other"], "index": None}


def test_validation_reports_every_error_with_its_pointer() -> None:
    schema = {
        "type": "object",
        "required": ["email", "items"],
        "properties": {
            "email": {"type": "string", "format": "email"},
            "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
        },
    }
    data = {"email": 7, "items": [{"sku": "a"}, {"qty": 1}]}
    with pytest.raises(NodeError) as caught:
        validation(data, schema)
    errors = caught.value.errors  # type: ignore[attr-defined]
    assert {e["pointer"] for e in errors} == {"/email", "/items/1"}
    assert not caught.value.retryable
    report = validation(data, schema, on_invalid="report")
    assert report["valid"] is False and len(report["errors"]) == 2
    good = {"email": "a@b.test", "items": []}
    assert validation(good, schema) == good


def test_an_invalid_schema_is_refused_when_the_definition_is_built() -> None:
    with pytest.raises(af.WorkflowError, match="JSON Schema"):
        one_node("validation", {"data": {}, "schema": {"type": "nonsense"}})


@af.workflow
def incident(severity: str = "high"):
    """Started by error_handler when a node fails."""
    return af.nodes.logger(message="incident", data=severity)


def test_error_handler_handles_and_starts_a_workflow_once(run_client: af.Client, http_server: Any) -> None:
    wf = af.Workflow.from_dict(
        {
            "name": "guarded",
            "nodes": [
                {
                    "id": "fetch",
                    "type": "http_request",
                    "config": {"url": http_server.url("/missing")},
                    "options": {"retries": 0},
                },
                {
                    "id": "on_error",
                    "type": "error_handler",
                    "config": {"workflow": "incident", "inputs": {"severity": "low"}},
                },
            ],
            "edges": [{"source": "fetch", "target": "on_error", "input": "error"}],
            "output": "on_error",
        }
    )
    info = run_client.execute(wf).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED  # the failure was handled
    assert info.nodes["fetch"].status is af.NodeStatus.FAILED
    handled = info.nodes["on_error"].output
    assert handled["handled"] and handled["error"]["node_id"] == "fetch" and "404" in handled["error"]["message"]
    started = run_client.status(handled["started_run"])
    assert started.workflow == "incident" and started.trigger == "error" and started.inputs == {"severity": "low"}
    assert started.trigger_data["execution"]["id"] == info.id
    assert started.trigger_data["execution"]["lastNodeExecuted"] == "fetch"
    assert run_client.wait(started.id, timeout=30).status is af.RunStatus.COMPLETED


class Flaky(Exception):
    pass


calls: list[str] = []


@af.node(retries=0)
def sometimes(kind: str) -> str:
    calls.append(kind)
    if len(calls) < 3:
        raise Flaky("again") if kind == "flaky" else KeyError("nope")
    return "ok"


def test_retry_wraps_a_node_with_the_engine_policy(run_client: af.Client) -> None:
    wrapped = retry(sometimes, attempts=4, backoff=af.Backoff(base=0.01, jitter=False), retry_on=["Flaky"])
    assert wrapped.options.retries == 3 and wrapped.options.retry_on == ("Flaky",)

    @af.workflow
    def retried(kind: str):
        return wrapped(kind)

    calls.clear()
    assert run_client.execute(retried, kind="flaky").result(timeout=30) == "ok" and len(calls) == 3
    calls.clear()
    info = run_client.execute(retried, kind="other").wait(timeout=30)  # KeyError is not in retry_on
    assert info.status is af.RunStatus.FAILED and len(calls) == 1


def test_retry_on_http_status_in_json_options() -> None:
    wf = one_node("http_request", {"url": "http://x"}, {"retries": 4, "retry_on": [429, 503, "NodeError"]})
    assert wf.to_dict()["nodes"][0]["options"]["retry_on"] == [429, 503, "NodeError"]
    with pytest.raises(af.WorkflowError, match="retry_on"):
        one_node("http_request", {"url": "http://x"}, {"retry_on": []})
