"""Workflows stored by id (versions, organizations), execution by id, run filters and
idempotent execution: the Client's catalog, tested without HTTP on every backend."""

from __future__ import annotations

from typing import Any

import pytest

import autoflow as af


@af.node
def catalog_add(a: int, b: int = 1) -> int:
    return a + b


@af.node
def catalog_neg(x: int) -> int:
    return -x


@af.workflow
def catalog_flow(a: int):
    return catalog_neg(catalog_add(a))


def _definition(name: str = "stored_flow") -> dict[str, Any]:
    data = catalog_flow.to_dict()
    data["name"] = name
    return data


def test_save_execute_and_version(client: af.Client) -> None:
    saved = client.save_workflow(_definition(), workflow_id="flow-1")
    assert (saved.id, saved.version, saved.organization_id) == ("flow-1", 1, None)
    run = client.execute("flow-1", a=4)
    assert run.result(timeout=30) == -5
    info = run.status()
    assert (info.workflow_id, info.workflow_version, info.workflow) == ("flow-1", 1, "stored_flow")

    changed = _definition()
    changed["nodes"][0]["config"]["b"] = 10  # add 10 instead of 1
    assert client.save_workflow(changed, workflow_id="flow-1").version == 2
    again = client.execute("flow-1", a=4)
    assert again.result(timeout=30) == -14 and again.status().workflow_version == 2
    pinned = client.execute(client.stored_workflow("flow-1", version=1), a=4)
    assert pinned.result(timeout=30) == -5 and pinned.status().workflow_version == 1
    assert [r.id for r in client.runs(workflow_id="flow-1")] == [pinned.id, again.id, run.id]


def test_a_bad_definition_names_the_fault_and_stores_nothing(client: af.Client) -> None:
    bad = _definition()
    bad["nodes"][0]["type"] = "nowhere:missing"
    with pytest.raises(af.WorkflowError, match="nowhere:missing"):
        client.save_workflow(bad, workflow_id="bad")
    wiring = _definition()
    wiring["edges"][0]["source"] = "ghost"
    with pytest.raises(af.WorkflowError, match="ghost"):
        client.save_workflow(wiring, workflow_id="bad")
    with pytest.raises(af.WorkflowError, match="workflow id"):
        client.save_workflow(_definition(), workflow_id="no spaces allowed")
    with pytest.raises(af.WorkflowError):
        client.save_workflow({"nodes": "not a list"}, workflow_id="bad")
    with pytest.raises(af.NotFoundError):
        client.stored_workflow("bad")


def test_expected_version_conflicts(client: af.Client) -> None:
    client.save_workflow(_definition(), workflow_id="w", expected_version=0)
    with pytest.raises(af.ConflictError, match="version 1"):
        client.save_workflow(_definition(), workflow_id="w", expected_version=0)
    assert client.save_workflow(_definition(), workflow_id="w", expected_version=1).version == 2


def test_organizations_see_only_their_workflows_and_runs(client: af.Client) -> None:
    client.save_workflow(_definition("acme_flow"), workflow_id="flow", organization_id="acme")
    with pytest.raises(af.NotFoundError):
        client.execute("flow", a=1, organization_id="beta")  # beta has no 'flow'
    run = client.execute("flow", a=1, organization_id="acme", user_id="u1")
    assert run.result(timeout=30) == -2
    assert [r.id for r in client.runs(organization_id="acme")] == [run.id]
    assert client.runs(organization_id="beta") == []
    assert [w.id for w in client.stored_workflows(organization_id="acme")] == ["flow"]
    assert client.stored_workflows() == []


def test_stored_id_wins_over_a_registered_name(client: af.Client) -> None:
    assert client.execute("catalog_flow", a=1).result(timeout=30) == -2  # the registered one
    other = _definition()
    other["nodes"][0]["config"]["b"] = 100
    client.save_workflow(other, workflow_id="catalog_flow")
    assert client.execute("catalog_flow", a=1).result(timeout=30) == -101


def test_idempotency_key_gives_one_run(client: af.Client) -> None:
    client.save_workflow(_definition(), workflow_id="once")
    first = client.execute("once", a=1, idempotency_key="delivery-1")
    second = client.execute("once", a=1, idempotency_key="delivery-1")
    assert first.id == second.id and first.created and not second.created
    assert len(client.runs(workflow_id="once")) == 1


def test_execute_many_of_a_stored_workflow_records_its_id_and_version(client: af.Client) -> None:
    """On every backend, immediate mode included (it used to run each item through
    execute() with the loaded workflow, which dropped the stored id)."""
    client.save_workflow(_definition(), workflow_id="flow-many")
    runs = client.execute_many("flow-many", [{"a": 4}, {"a": 5}])
    assert [run.result(timeout=30) for run in runs] == [-5, -6]
    assert {(run.status().workflow_id, run.status().workflow_version) for run in runs} == {("flow-many", 1)}
