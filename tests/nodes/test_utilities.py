"""data_transform, clone, logger and the trigger nodes."""

from __future__ import annotations

from typing import Any

import pytest

import autoflow as af
from autoflow.nodes import NodeError, clone, data_transform
from tests.nodes.util import log_text, one_node, run

ORDER = {
    "id": "o1",
    "customer": {"email": "ana@x.test", "age": "41"},
    "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}],
}


def test_jmespath_expression() -> None:
    assert data_transform(ORDER, expression="items[?qty > `0`].sku") == ["a"]


def test_typed_assignments_strict_and_loose() -> None:
    assignments = [
        {"name": "contact.email", "path": "customer.email", "type": "string"},
        {"name": "age", "path": "customer.age", "type": "integer"},
        {"name": "source", "value": "web"},
    ]
    with pytest.raises(NodeError, match=r"assignments\[1\] \(age\).*strict"):
        data_transform(ORDER, assignments=assignments)
    out = data_transform(ORDER, assignments=assignments, strict=False, keep_other_fields=False)
    assert out == {"contact": {"email": "ana@x.test"}, "age": 41, "source": "web"}
    kept = data_transform(ORDER, assignments=assignments[2:])
    assert kept["id"] == "o1" and kept["source"] == "web"
    lenient = data_transform(
        {"n": "many"},
        assignments=[{"name": "n", "path": "n", "type": "number"}],
        strict=False,
        ignore_conversion_errors=True,
    )
    assert lenient == {"n": "many"}


def test_a_bad_expression_is_refused_when_the_definition_is_built() -> None:
    with pytest.raises(af.WorkflowError, match="JMESPath"):
        one_node("data_transform", {"data": {}, "expression": "items[?"})


def test_clone() -> None:
    original = {"a": [1, {"b": 2}]}
    copied = clone(original)
    assert copied == original and copied is not original and copied["a"] is not original["a"]
    assert clone(original, copies=3) == [original] * 3


def test_logger_writes_the_workflow_log_shape_redacted(run_client: af.Client) -> None:
    canary = "log-canary-3b8e1f22"
    config = {
        "message": f"charging with Bearer {canary}",
        "level": "warn",
        "data": {"order": "o1", "password": canary, "nested": {"api_key": canary}},
    }
    run_ = run_client.execute(one_node("logger", config))
    info = run_.wait(timeout=30)
    out = info.output
    assert out["level"] == "warn" and out["node_id"] == "n" and out["data"]["order"] == "o1"
    assert set(out) == {"timestamp", "level", "message", "node_id", "data"}
    entries = [e for e in run_client.logs(run_.id) if e.message.startswith("charging")]
    assert entries and entries[0].level is af.LogLevel.WARN
    assert canary not in info.model_dump_json() + log_text(run_client, run_.id)


# -- triggers --------------------------------------------------------------------------------
def test_manual_trigger_passes_the_trigger_data_on(run_client: af.Client) -> None:
    wf = af.Workflow.from_dict(
        {
            "name": "manual",
            "inputs": {"who": {"type": "string"}},
            "nodes": [{"id": "n", "type": "manual_trigger"}],
            "edges": [],
            "output": "n",
        }
    )
    info = run_client.execute(wf, {"who": "Ana"}, trigger_data={"hello": 1}, trigger="manual", user_id="u1").wait(30)
    assert info.output == {
        "trigger": "manual",
        "data": {"hello": 1},
        "inputs": {"who": "Ana"},
        "user_id": "u1",
        "organization_id": None,
    }


def test_webhook_trigger_carries_the_request(run_client: af.Client) -> None:
    request = {"method": "POST", "path": "/orders", "headers": {}, "query": {}, "body": {"id": 7}}
    wf = one_node("webhook_trigger", {"path": "orders", "methods": ["POST"], "strict": True})
    info = run_client.execute(wf, trigger="webhook", trigger_data=request).wait(timeout=30)
    assert info.output["trigger"] == "webhook" and info.output["data"]["body"] == {"id": 7}
    info = run_client.execute(wf, trigger="manual").wait(timeout=30)  # strict: only webhooks
    assert info.status is af.RunStatus.FAILED and "'manual'" in info.nodes["n"].error.message


def test_schedule_and_database_triggers(run_client: af.Client) -> None:
    wf = one_node("schedule_trigger", {"cron": "0 9 * * 1", "timezone": "America/Sao_Paulo"})
    info = run_client.execute(wf, trigger="schedule", trigger_data={"slot": "2026-11-30T12:00:00Z"}).wait(timeout=30)
    assert info.output["data"] == {"slot": "2026-11-30T12:00:00Z"}
    wf = one_node("database_trigger", {"table": "public.orders", "events": ["insert", "update"]})
    change = {"table": "orders", "op": "insert", "new": {"id": 1}}
    assert run_client.execute(wf, trigger="database", trigger_data=change).result(timeout=30)["data"] == change


@pytest.mark.parametrize(
    ("node_type", "config", "fragment"),
    [
        ("schedule_trigger", {"cron": "every monday"}, "cron"),
        ("schedule_trigger", {"cron": "* * * * *", "timezone": "Mars/Base"}, "time zone"),
        ("database_trigger", {"table": "orders; drop"}, "table"),
        ("database_trigger", {"table": "orders", "events": ["truncate"]}, "events"),
        ("webhook_trigger", {"methods": ["FETCH"]}, "methods"),
        ("schedule_trigger", {"interval_seconds": 0}, "interval_seconds"),
    ],
)
def test_trigger_config_is_checked_when_the_definition_is_built(
    node_type: str, config: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(af.WorkflowError, match=fragment):
        one_node(node_type, config)


def test_run_helper_is_used(run_client: af.Client) -> None:
    assert run(run_client, "clone", {"data": [1]}).output == [1]
