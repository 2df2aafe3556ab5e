"""``Client.execute_many``: many runs of one workflow submitted at once, on every backend."""

from __future__ import annotations

import pytest

import autoflow as af
from autoflow.errors import InputError, NotFoundError
from autoflow.models import RunStatus


@af.node
def scaled(x: int, by: int = 2) -> int:
    return x * by


@af.node
def plus_one(x: int) -> int:
    return x + 1


@af.workflow
def scale_then_add(x: int, by: int = 2):
    return plus_one(scaled(x, by))


def test_runs_are_submitted_in_order_and_each_gets_its_inputs(client: af.Client) -> None:
    runs = client.execute_many(scale_then_add, [{"x": i, "by": 3} for i in range(30)], priority=2, user_id="u1")
    assert len({run.id for run in runs}) == 30
    assert all(run.created for run in runs)
    assert [run.result(timeout=30) for run in runs] == [3 * i + 1 for i in range(30)]
    info = runs[7].status()
    assert info.inputs == {"x": 7, "by": 3} and info.priority == 2 and info.user_id == "u1"
    assert info.trigger == "manual"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"x": 1}, {"x": "two"}, {"x": 3}], "inputs[1]"),
        ([{"x": 1}, {"y": 2}], "inputs[1]"),
        ([{"x": 1}, 2], "inputs[1] must be a dict"),
        ({"x": 1}, "must be a list of dicts"),
    ],
)
def test_a_bad_item_is_named_and_no_run_is_created(client: af.Client, inputs: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        client.execute_many(scale_then_add, inputs)  # type: ignore[arg-type]
    assert client.runs() == []


def test_options_are_checked_before_anything_is_stored(client: af.Client) -> None:
    with pytest.raises(InputError, match="priority"):
        client.execute_many(scale_then_add, [{"x": 1}], priority=10**9)
    with pytest.raises(InputError, match="one key per item"):
        client.execute_many(scale_then_add, [{"x": 1}, {"x": 2}], idempotency_keys=["k"])
    with pytest.raises(InputError, match="different"):
        client.execute_many(scale_then_add, [{"x": 1}, {"x": 2}], idempotency_keys=["k", "k"])
    with pytest.raises(InputError, match=r"idempotency_keys\[1\]"):
        client.execute_many(scale_then_add, [{"x": 1}, {"x": 2}], idempotency_keys=["k", ""])
    with pytest.raises(TypeError, match="execute_many"):
        client.execute_many(42, [{"x": 1}])  # type: ignore[arg-type]
    assert client.runs() == []


def test_idempotency_keys_find_the_runs_made_before(client: af.Client) -> None:
    keys = ["order-1", "order-2"]
    first = client.execute_many(scale_then_add, [{"x": 1}, {"x": 2}], idempotency_keys=keys)
    assert [run.result(timeout=30) for run in first] == [3, 5]
    again = client.execute_many(scale_then_add, [{"x": 1}, {"x": 2}, {"x": 3}], idempotency_keys=[*keys, "order-3"])
    assert [run.id for run in again[:2]] == [run.id for run in first]
    assert [run.created for run in again] == [False, False, True]
    assert again[2].result(timeout=30) == 7
    assert len(client.runs(limit=10)) == 3


def test_an_empty_list_submits_nothing(client: af.Client) -> None:
    assert client.execute_many(scale_then_add, []) == []
    assert client.runs() == []


def test_statuses_of_many_runs_are_read_at_once_as_one_by_one(client: af.Client) -> None:
    """``Client.run_statuses`` answers ``run_status`` of each run (handles or ids), in
    order, and refuses an unknown run with run_status's own NotFoundError."""
    runs = client.execute_many(scale_then_add, [{"x": i} for i in range(3)])
    for run in runs:
        run.wait(timeout=30)
    assert client.run_statuses(runs) == [RunStatus.COMPLETED] * 3
    ids = [runs[2].id, runs[0].id, runs[2].id]
    assert client.run_statuses(ids) == [client.run_status(run_id) for run_id in ids]
    assert client.run_statuses([]) == []
    with pytest.raises(NotFoundError) as single:
        client.run_status("no-such-run")
    with pytest.raises(NotFoundError) as many:
        client.run_statuses([runs[0], "no-such-run", "another-one"])
    assert str(many.value) == str(single.value)  # the first unknown one, in the same words


def test_summaries_of_many_runs_are_their_status_without_nodes(client: af.Client) -> None:
    """``Client.run_summaries``: each run's own fields (handles or ids), in order, as the
    full status has them, without nodes; an unknown run is run_status's NotFoundError."""
    runs = client.execute_many(scale_then_add, [{"x": i} for i in range(3)])
    for run in runs:
        run.wait(timeout=30)
    summaries = client.run_summaries([runs[2], runs[0].id])
    assert [s.id for s in summaries] == [runs[2].id, runs[0].id]
    full = client.status(runs[2])
    assert summaries[0].nodes == {} and summaries[0].inputs == full.inputs and full.inputs["x"] == 2
    assert (summaries[0].status, summaries[0].created_at) == (full.status, full.created_at)
    assert client.run_summaries([]) == []
    with pytest.raises(NotFoundError) as single:
        client.run_status("no-such-run")
    with pytest.raises(NotFoundError) as many:
        client.run_summaries([runs[0], "no-such-run"])
    assert str(many.value) == str(single.value)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_submitter_admits_only_into_free_slots(
    kind: str, request: pytest.FixtureRequest, settings: af.Settings
) -> None:
    """Like execute(): runs beyond WORKFLOW_CONCURRENCY wait, and exactly one message per
    root of each admitted run is queued."""
    tuned = settings.model_copy(update={"workflow_concurrency": 3})
    url = None if kind == "sqlite" else request.getfixturevalue("redis_url")
    submitter = af.Client(url, settings=tuned, workers=0)
    try:
        runs = submitter.execute_many(scale_then_add, [{"x": i} for i in range(7)])
        statuses = [run.status().status for run in runs]
        assert statuses == [RunStatus.RUNNING] * 3 + [RunStatus.PENDING] * 4
        assert submitter.backend.dispatcher.backlog() == 3
        assert submitter.stats().workflow.waiting == 4
    finally:
        submitter.close()
    worker = af.Client(url, settings=tuned, workers=2)
    worker.start()
    try:
        assert [worker.result(run, timeout=30) for run in runs] == [2 * i + 1 for i in range(7)]
    finally:
        worker.close()
