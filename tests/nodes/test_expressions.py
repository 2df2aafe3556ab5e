"""Expressions in JSON configs: $expr (JMESPath) and $template ({{ }} strings)."""

from __future__ import annotations

from typing import Any

import pytest

import autoflow as af
from autoflow.templates import resolve_template, template_refs


def _wf(nodes: list[dict[str, Any]], output: str, inputs: dict[str, Any] | None = None) -> af.Workflow:
    return af.Workflow.from_dict(
        {"name": "expr", "inputs": inputs or {}, "nodes": nodes, "edges": [], "output": output}
    )


def test_resolution_is_pure() -> None:
    outputs = {"order": {"id": 7, "items": [{"sku": "a"}, {"sku": "b"}]}}
    inputs = {"email": "ana@x.test"}
    tpl = {
        "first": {"$expr": "nodes.order.items[0].sku"},
        "text": {"$template": "Order {{ nodes.order.id }} for {{ inputs.email }}: {{ nodes.order.items[*].sku }}"},
        "typed": {"$template": "{{ nodes.order.id }}"},
        "list": [{"$expr": "length(nodes.order.items)"}],
    }
    assert resolve_template(tpl, outputs, inputs) == {
        "first": "a",
        "text": 'Order 7 for ana@x.test: ["a","b"]',
        "typed": 7,
        "list": [2],
    }
    assert sorted(template_refs(tpl)) == [
        ("$input", "email"),
        ("$ref", "order"),
        ("$ref", "order"),
        ("$ref", "order"),
        ("$ref", "order"),
        ("$ref", "order"),
    ]


def test_a_node_named_in_an_expression_becomes_a_dependency(run_client: af.Client) -> None:
    wf = _wf(
        [
            {"id": "late", "type": "clone", "config": {"data": {"$template": "total={{ nodes.early.total }}"}}},
            {"id": "early", "type": "clone", "config": {"data": {"total": {"$input": "total"}}}},
        ],
        "late",
        {"total": {"type": "integer"}},
    )
    assert ("early", "late") in wf.graph.edges and wf.graph.edges["early", "late"]["kind"] == "expression"
    again = af.Workflow.from_dict(wf.to_dict())
    assert again.digest == wf.digest and ("early", "late") in again.graph.edges
    assert run_client.execute(wf, total=12).result(timeout=30) == "total=12"
    assert "early" in wf.to_svg() and "late" in wf.to_svg()


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"data": {"$expr": "nodes.ghost.x"}}, "unknown node 'ghost'"),
        ({"data": {"$expr": "inputs.nobody"}}, "unknown workflow input 'nobody'"),
        ({"data": {"$expr": "nodes.a[?"}}, "does not parse as JMESPath"),
        ({"data": {"$expr": "nodes"}}, "nodes.<node_id>"),
        ({"data": {"$template": "hi {{ nodes.a.x"}}, "unbalanced"),
    ],
)
def test_bad_expressions_are_refused_naming_node_and_argument(config: dict[str, Any], fragment: str) -> None:
    nodes = [{"id": "a", "type": "clone", "config": {"data": 1}}, {"id": "b", "type": "clone", "config": config}]
    with pytest.raises(af.WorkflowError, match=fragment) as caught:
        _wf(nodes, "b")
    assert "'b'" in str(caught.value)


def test_expressions_are_not_allowed_in_the_output() -> None:
    with pytest.raises(af.WorkflowError, match="output may not hold an expression"):
        af.Workflow.from_dict(
            {
                "name": "o",
                "nodes": [{"id": "a", "type": "clone", "config": {"data": 1}}],
                "edges": [],
                "output": {"x": {"$expr": "nodes.a"}},
            }
        )


def test_a_failing_expression_fails_the_node_without_retries(run_client: af.Client) -> None:
    wf = _wf(
        [
            {"id": "a", "type": "clone", "config": {"data": 5}},
            {"id": "b", "type": "clone", "config": {"data": {"$expr": "length(nodes.a)"}}, "options": {"retries": 3}},
        ],
        "b",
    )
    info = run_client.execute(wf).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["b"].attempt == 1
    assert info.nodes["b"].error.type == "ExpressionError" and "length(nodes.a)" in info.nodes["b"].error.message


def test_expressions_from_python() -> None:
    from autoflow.nodes import clone

    @af.workflow
    def greet(name: str):
        return clone({"$template": "hello {{ inputs.name }}"})

    assert greet.to_dict()["nodes"][0]["config"]["data"] == {"$template": "hello {{ inputs.name }}"}
    with af.Client(immediate=True) as client:
        assert client.execute(greet, name="Ana").result() == "hello Ana"
