"""The catalog contract (workflows by id, run queries), run against both stores."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from autoflow import codec
from autoflow.models import RunStatus
from autoflow.store.base import NewRun, NodeSeed, Store
from autoflow.store.catalog import ANY_VERSION, RunQuery


def _run(store: Store, **fields: object) -> str:
    run = NewRun(
        id=codec.new_run_id(),
        workflow=str(fields.pop("workflow", "wf")),
        digest="d" * 32,
        inputs={},
        output={"$ref": "a"},
        created_at=time.time(),
        **fields,  # type: ignore[arg-type]
    )
    return store.create_run(run, [NodeSeed("a", "tests:fn", (), ())])


def test_versions_of_a_workflow(store: Store) -> None:
    assert store.get_workflow(None, "etl") is None
    assert store.save_workflow(None, "etl", "etl", '{"v": 1}') == 1
    assert store.save_workflow(None, "etl", "etl", '{"v": 2}') == 2
    latest = store.get_workflow(None, "etl")
    assert latest is not None and latest.version == 2 and latest.definition == {"v": 2}
    first = store.get_workflow(None, "etl", 1)
    assert first is not None and first.definition == {"v": 1} and first.name == "etl"
    assert store.get_workflow(None, "etl", 3) is None


def test_expected_version_is_checked_atomically(store: Store) -> None:
    assert store.save_workflow("o1", "w", "w", "{}", expected_version=0) == 1
    assert store.save_workflow("o1", "w", "w", "{}", expected_version=0) is None  # exists
    assert store.save_workflow("o1", "w", "w", "{}", expected_version=5) is None  # stale
    assert store.save_workflow("o1", "w", "w", "{}", expected_version=1) == 2
    with ThreadPoolExecutor(8) as pool:  # eight racing creates of one new id: one wins
        made = list(
            pool.map(lambda i: store.save_workflow("o1", "race", "r", f'{{"i": {i}}}', expected_version=0), range(8))
        )
    assert sorted(made, key=lambda v: v or 0) == [None] * 7 + [1]
    assert store.save_workflow("o1", "w", "w", "{}", expected_version=ANY_VERSION) == 3


def test_organizations_have_their_own_ids(store: Store) -> None:
    store.save_workflow("a", "etl", "etl", '{"org": "a"}')
    store.save_workflow("b", "etl", "etl", '{"org": "b"}')
    store.save_workflow("b", "other", "other", "{}")
    found_a = store.get_workflow("a", "etl")
    assert found_a is not None and found_a.definition == {"org": "a"} and found_a.organization_id == "a"
    assert store.get_workflow(None, "etl") is None
    assert [w.id for w in store.list_workflows("b")] == ["etl", "other"]
    assert [w.id for w in store.list_workflows("a")] == ["etl"]
    assert store.list_workflows("nobody") == []


def test_a_run_records_its_workflow_id_and_version(store: Store) -> None:
    run_id = _run(store, workflow_id="etl", workflow_version=3, organization_id="o1")
    info = store.get_run(run_id)
    assert info is not None and info.workflow_id == "etl" and info.workflow_version == 3
    plain = store.get_run(_run(store))
    assert plain is not None and plain.workflow_id is None and plain.workflow_version is None


def test_query_runs_filters_and_pages(store: Store) -> None:
    a1 = _run(store, organization_id="acme", user_id="u1", trigger="webhook", workflow_id="etl")
    a2 = _run(store, organization_id="acme", user_id="u2", trigger="manual", workflow="other")
    b1 = _run(store, organization_id="beta", user_id="u1", trigger="webhook")
    store.cancel_run(a2)
    ids = lambda **kw: [r.id for r in store.query_runs(RunQuery(**kw))]  # noqa: E731
    assert ids(organization_id="acme") == [a2, a1]
    assert ids(organization_id="beta") == [b1]
    assert ids(organization_id="acme", user_id="u1") == [a1]
    assert ids(trigger="webhook", limit=10)[:2] == [b1, a1]
    assert ids(organization_id="acme", status=RunStatus.CANCELLED) == [a2]
    assert ids(organization_id="acme", workflow="other") == [a2]
    assert ids(organization_id="acme", workflow_id="etl") == [a1]
    assert ids(organization_id="acme", limit=1) == [a2]
    assert ids(organization_id="acme", before=a2) == [a1]  # the next page
    assert ids(organization_id="acme", before=a1) == []
    assert ids(organization_id="nobody") == []
    assert ids(workflow="other", organization_id="acme") == [a2]
