"""One contract for every store: the same tests run against SQLite and Redis."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
import redis

from autoflow import codec
from autoflow.models import ErrorInfo, LogLevel, NodeStatus, RunStatus
from autoflow.store import redis_scripts
from autoflow.store.base import NewRun, NodeSeed, Ready, Store
from autoflow.store.redis import RedisStore
from autoflow.store.redis_line import _Line
from autoflow.store.rules import Decision, Rule, decide, skip_outcome
from autoflow.store.sqlite_reads import ID_PAGE

LEASE = 30.0
ERR = ErrorInfo(type="ValueError", message="boom", traceback="Traceback ...", node_id=None)


def seed(
    store: Store,
    graph: dict[str, list[str]],
    *,
    priority: int = 0,
    workflow: str = "wf",
    idempotency_key: str | None = None,
    output: Any = None,
    rules: dict[str, str] | None = None,
    whens: dict[str, tuple[str, bool]] | None = None,
    parent: tuple[str, str] | None = None,
    item_parents: dict[str, tuple[str, ...]] | None = None,
) -> str:
    """Create a run of ``graph`` (node -> parents) and return its id."""
    children: dict[str, list[str]] = {n: [] for n in graph}
    for node, parents in graph.items():
        for p in parents:
            children[p].append(node)
    nodes = [
        NodeSeed(
            n,
            "tests:fn",
            tuple(ps),
            tuple(children[n]),
            rule=(rules or {}).get(n, "all_success"),
            when=(whens or {}).get(n),
            item_parents=(item_parents or {}).get(n),
        )
        for n, ps in graph.items()
    ]
    last = list(graph)[-1]
    run = NewRun(
        id=codec.new_run_id(),
        workflow=workflow,
        digest="d" * 32,
        inputs={"x": 1},
        output=output if output is not None else {"$ref": last},
        created_at=time.time(),
        priority=priority,
        idempotency_key=idempotency_key,
        parent_run_id=parent[0] if parent else None,
        parent_node_id=parent[1] if parent else None,
    )
    return store.create_run(run, nodes)


def start(store: Store, graph: dict[str, list[str]], **kw: Any) -> tuple[str, list[Ready]]:
    run_id = seed(store, graph, **kw)
    ready = [r for r in store.admit(1000) if r.run_id == run_id]
    return run_id, ready


def run_node(store: Store, run_id: str, node: str, output: Any = None, attempt: int = 1) -> list[Ready]:
    claim = store.claim(run_id, node, attempt, "tok-" + node, LEASE)
    assert claim is not None, f"{node} could not be claimed"
    progress = store.complete(run_id, node, "tok-" + node, codec.dumps(output if output is not None else node), [])
    assert progress.accepted
    return progress.ready


def gather(store: Store, run_id: str, node: str) -> list[Ready]:
    """What a worker does with a map node whose items are all done: read their results in
    pages and complete it with them."""
    claim = store.claim(run_id, node, 1, "gather-" + node, LEASE)
    assert claim is not None and claim.gather is not None, f"{node} is not gathering"
    parts = [text for first in range(0, claim.gather, 2) for text in store.map_results(run_id, node, first, 2)]
    progress = store.complete(run_id, node, "gather-" + node, "[" + ",".join(parts[: claim.gather]) + "]", [])
    assert progress.accepted
    return progress.ready


def statuses(store: Store, run_id: str) -> dict[str, str]:
    info = store.get_run(run_id)
    assert info is not None
    return {k: n.status.value for k, n in info.nodes.items()}


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_definitions_roundtrip(store: Store) -> None:
    assert store.get_definition("nope") is None
    store.put_definition("abc", '{"name": "x"}')
    store.put_definition("abc", '{"name": "ignored"}')
    assert store.get_definition("abc") == '{"name": "x"}'


def test_blobs_roundtrip(store: Store) -> None:
    assert store.get_blob("k") is None
    store.put_blob("k", b"\x00\xffbytes")
    store.put_blob("k", b"\x00\xffbytes2")
    assert store.get_blob("k") == b"\x00\xffbytes2"


def test_created_run_is_pending_until_admitted(store: Store) -> None:
    run_id = seed(store, DIAMOND)
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.PENDING
    assert info.inputs == {"x": 1} and info.workflow == "wf"
    assert list(info.nodes) == ["a", "b", "c", "d"]
    assert all(n.status is NodeStatus.PENDING for n in info.nodes.values())
    assert store.claim(run_id, "a", 1, "t", LEASE) is None  # not admitted yet
    assert store.get_run("missing") is None


def test_admit_respects_limit_and_priority(store: Store) -> None:
    low = seed(store, {"a": []}, priority=0)
    high = seed(store, {"a": []}, priority=5)
    mid = seed(store, {"a": []}, priority=1)
    ready = store.admit(2)
    assert [r.run_id for r in ready] == [high, mid]
    assert [r.priority for r in ready] == [5, 1]
    assert store.admit(2) == []  # both slots taken
    info = store.get_run(low)
    assert info is not None and info.status is RunStatus.PENDING
    run_node(store, high, "a")
    assert [r.run_id for r in store.admit(2)] == [low]


def test_admit_is_fifo_within_a_priority(store: Store) -> None:
    ids = [seed(store, {"a": []}) for _ in range(5)]
    assert [r.run_id for r in store.admit(10)] == ids


def test_keyed_runs_keep_their_place_in_the_admission_queue(store: Store) -> None:
    # A keyed run's id is a hash ("k..."), not time-ordered: it must still be admitted in
    # creation order among its priority's runs, not after every plain run.
    ids = []
    for i in range(4):
        ids.append(seed(store, {"a": []}, idempotency_key=f"key-{i}" if i % 2 else None))
        time.sleep(0.002)  # distinct creation times
    assert [r.run_id for r in store.admit(1)] == [ids[0]]
    assert [r.run_id for r in store.admit(2)] == [ids[1]]  # one slot left
    run_node(store, ids[0], "a")
    run_node(store, ids[1], "a")
    assert [r.run_id for r in store.admit(2)] == ids[2:]
    high = seed(store, {"a": []}, priority=1, idempotency_key="key-high")
    low = seed(store, {"a": []}, priority=-1)
    run_node(store, ids[2], "a")
    run_node(store, ids[3], "a")
    assert [r.run_id for r in store.admit(2)] == [high, low]  # priority first, still


def test_claim_returns_inputs_and_parent_outputs(store: Store) -> None:
    run_id, ready = start(store, DIAMOND)
    assert [(r.node_id, r.attempt) for r in ready] == [("a", 1)]
    claim = store.claim(run_id, "a", 1, "t1", LEASE)
    assert claim is not None and claim.inputs == {"x": 1} and claim.outputs == {}
    assert claim.digest == "d" * 32 and claim.workflow == "wf"
    assert store.claim(run_id, "a", 1, "t2", LEASE) is None  # already running
    store.complete(run_id, "a", "t1", codec.dumps({"v": [1, 2]}), [])
    claim_b = store.claim(run_id, "b", 1, "t3", LEASE)
    assert claim_b is not None and claim_b.outputs == {"a": {"v": [1, 2]}}
    assert store.claim(run_id, "c", 2, "t4", LEASE) is None  # wrong attempt


def test_diamond_runs_to_completion_and_resolves_output(store: Store) -> None:
    run_id, _ = start(store, DIAMOND, output={"sum": {"$ref": "d"}, "x": {"$input": "x"}})
    assert {r.node_id for r in run_node(store, run_id, "a", 1)} == {"b", "c"}
    assert run_node(store, run_id, "b", 2) == []  # d still waits for c
    ready = run_node(store, run_id, "c", 3)
    assert [r.node_id for r in ready] == ["d"]
    claim = store.claim(run_id, "d", 1, "td", LEASE)
    assert claim is not None and claim.outputs == {"b": 2, "c": 3}
    progress = store.complete(run_id, "d", "td", codec.dumps(5), [])
    assert progress.finished is RunStatus.COMPLETED
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.COMPLETED
    assert info.output == {"sum": 5, "x": 1}
    assert info.finished_at is not None and info.started_at is not None
    assert all(n.duration is not None for n in info.nodes.values())


def test_completion_is_fenced_by_token(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    store.claim(run_id, "a", 1, "mine", LEASE)
    assert not store.complete(run_id, "a", "other", codec.dumps(1), []).accepted
    assert not store.fail(run_id, "a", "other", ERR, None, []).accepted
    assert store.complete(run_id, "a", "mine", codec.dumps(1), []).accepted
    assert not store.complete(run_id, "a", "mine", codec.dumps(2), []).accepted  # exactly one result
    info = store.get_run(run_id)
    assert info is not None and info.nodes["a"].output == 1


def test_retry_moves_to_next_attempt_with_eta(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    store.claim(run_id, "a", 1, "t1", LEASE)
    eta = time.time() + 5
    progress = store.fail(run_id, "a", "t1", ERR, 5.0, [])  # retry in 5 s
    assert progress.accepted and progress.finished is None
    (ready,) = progress.ready
    assert (ready.node_id, ready.attempt) == ("a", 2) and ready.eta == pytest.approx(eta, abs=0.5)
    info = store.get_run(run_id)
    assert info is not None
    node = info.nodes["a"]
    assert node.status is NodeStatus.RETRYING and node.attempt == 2 and node.error == ERR
    assert store.claim(run_id, "a", 1, "t2", LEASE) is None  # the old attempt is stale
    assert store.claim(run_id, "a", 2, "t2", LEASE) is not None


def test_final_failure_skips_dependants_and_fails_the_run(store: Store) -> None:
    graph = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x"]}
    run_id, ready = start(store, graph)
    assert {r.node_id for r in ready} == {"a", "x"}
    store.claim(run_id, "a", 1, "ta", LEASE)
    progress = store.fail(run_id, "a", "ta", ERR, None, [])
    assert progress.accepted and progress.ready == [] and progress.finished is None
    assert statuses(store, run_id) == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "x": "queued",
        "y": "pending",
    }
    run_node(store, run_id, "x")  # the independent branch goes on
    claim = store.claim(run_id, "y", 1, "ty", LEASE)
    assert claim is not None
    assert store.complete(run_id, "y", "ty", codec.dumps(1), []).finished is RunStatus.FAILED
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.FAILED
    assert info.error is not None and info.error.type == "ValueError" and info.output is None


@pytest.mark.parametrize(
    ("rule", "outcome", "expected"),
    [
        ("all_done", "fail", "queued"),
        ("one_failed", "fail", "queued"),
        ("one_failed", "ok", "skipped"),
        ("all_failed", "ok", "skipped"),
        ("none_failed", "ok", "queued"),
        ("one_success", "ok", "queued"),
    ],
)
def test_trigger_rules_decide_children(store: Store, rule: str, outcome: str, expected: str) -> None:
    run_id, _ = start(store, {"a": [], "h": ["a"]}, rules={"h": rule})
    store.claim(run_id, "a", 1, "t", LEASE)
    if outcome == "ok":
        store.complete(run_id, "a", "t", codec.dumps(1), [])
    else:
        store.fail(run_id, "a", "t", ERR, None, [])
    assert statuses(store, run_id)["h"] == expected


def test_cancel_stops_pending_nodes_and_waits_for_running_ones(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": [], "c": ["a", "b"]})
    store.claim(run_id, "a", 1, "ta", LEASE)
    assert store.cancel_run(run_id) is RunStatus.RUNNING  # a still runs
    assert statuses(store, run_id) == {"a": "running", "b": "cancelled", "c": "cancelled"}
    assert store.claim(run_id, "b", 1, "tb", LEASE) is None
    assert store.heartbeat([(run_id, "a", "ta")], LEASE).cancelled == {run_id}
    progress = store.cancel_node(run_id, "a", "ta", [])
    assert progress.accepted and progress.finished is RunStatus.CANCELLED
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.CANCELLED and info.cancel_requested
    assert store.cancel_run(run_id) is RunStatus.CANCELLED  # idempotent
    assert store.cancel_run("missing") is None


def test_cancelling_a_pending_run_ends_it_at_once(store: Store) -> None:
    run_id = seed(store, DIAMOND)
    assert store.cancel_run(run_id) is RunStatus.CANCELLED
    assert set(statuses(store, run_id).values()) == {"cancelled"}
    assert store.admit(10) == []


def test_a_run_completing_after_cancel_is_still_cancelled(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": ["a"]})
    store.claim(run_id, "a", 1, "ta", LEASE)
    store.cancel_run(run_id)
    progress = store.complete(run_id, "a", "ta", codec.dumps(1), [])
    assert progress.ready == [] and progress.finished is RunStatus.CANCELLED


def test_failure_during_cancel_does_not_retry(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    store.claim(run_id, "a", 1, "ta", LEASE)
    store.cancel_run(run_id)
    progress = store.fail(run_id, "a", "ta", ERR, 1.0, [])
    assert progress.ready == [] and progress.finished is RunStatus.CANCELLED


def test_pause_holds_nodes_and_resume_resends_them(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": ["a"]})
    assert store.pause_run(run_id) is RunStatus.PAUSED
    assert store.claim(run_id, "a", 1, "t", LEASE) is None
    assert store.reap(time.time() + 1000, 1.0, 3) == []  # paused runs are left alone
    ready = store.resume_run(run_id)
    assert [(r.node_id, r.attempt, r.eta) for r in ready] == [("a", 1, None)]
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.RUNNING
    assert store.claim(run_id, "a", 1, "t", LEASE) is not None
    assert store.resume_run(run_id) == []  # not paused


def test_pausing_a_pending_run_keeps_it_out_of_admission(store: Store) -> None:
    run_id = seed(store, {"a": []})
    assert store.pause_run(run_id) is RunStatus.PAUSED
    assert store.admit(10) == []
    assert store.resume_run(run_id) == []
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.PENDING
    assert [r.run_id for r in store.admit(10)] == [run_id]


def test_stats_count_as_active_the_runs_holding_a_slot(store: Store) -> None:
    """``workflow.active`` counts what admission counts against WORKFLOW_CONCURRENCY: a
    started run, paused or not; a run paused before it was admitted holds no slot (and is
    not waiting either: admission passes it by)."""
    before = store.stats().workflow
    started, _ = start(store, {"a": []})
    paused_started, _ = start(store, {"a": []})
    paused_pending = seed(store, {"a": []})
    assert store.pause_run(paused_started) is RunStatus.PAUSED
    assert store.pause_run(paused_pending) is RunStatus.PAUSED
    now = store.stats().workflow
    assert (now.active - before.active, now.waiting - before.waiting) == (2, 0)
    run_node(store, started, "a")
    assert store.stats().workflow.active - before.active == 1  # its end freed its slot


def test_heartbeat_extends_leases_and_reports_lost_claims(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": []})
    store.claim(run_id, "a", 1, "ta", 0.5)
    store.claim(run_id, "b", 1, "tb", 0.5)
    result = store.heartbeat([(run_id, "a", "ta"), (run_id, "b", "wrong")], 60)
    assert result.lost == {(run_id, "b")} and result.cancelled == frozenset()
    ready = store.reap(time.time() + 5, 1000.0, 3)
    assert [r.node_id for r in ready] == ["b"]  # a's lease was extended, b's expired


def test_reaper_requeues_expired_leases_and_fences_the_old_worker(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": ["a"]})
    store.claim(run_id, "a", 1, "dead", 1.0)
    ready = store.reap(time.time() + 10, 1000.0, 3)
    assert [(r.run_id, r.node_id, r.attempt) for r in ready] == [(run_id, "a", 1)]
    info = store.get_run(run_id)
    assert info is not None
    assert info.nodes["a"].status is NodeStatus.QUEUED and info.nodes["a"].stall_count == 1
    assert not store.complete(run_id, "a", "dead", codec.dumps(1), []).accepted  # the zombie is fenced
    assert store.claim(run_id, "a", 1, "alive", LEASE) is not None
    assert [r.node_id for r in store.complete(run_id, "a", "alive", codec.dumps(1), []).ready] == ["b"]
    assert any("lease expired" in e.message for e in store.get_logs(run_id))


def test_reaper_fails_a_node_as_crashed_after_max_stalls(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "b": ["a"]})
    for stall in range(3):
        assert store.claim(run_id, "a", 1, f"t{stall}", 1.0) is not None
        assert len(store.reap(time.time() + 10, 1000.0, 2)) == (1 if stall < 2 else 0)
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.FAILED
    assert info.nodes["a"].status is NodeStatus.FAILED and info.nodes["b"].status is NodeStatus.SKIPPED
    assert info.error is not None and info.error.type == "WorkerCrashed" and "'a'" in info.error.message


def test_reaper_cancels_a_lost_node_of_a_cancelled_run(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    store.claim(run_id, "a", 1, "dead", 1.0)
    store.cancel_run(run_id)
    assert store.reap(time.time() + 10, 1000.0, 3) == []
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.CANCELLED


def test_reaper_resends_messages_queued_too_long(store: Store) -> None:
    _run_id, _ = start(store, {"a": []})
    assert store.reap(time.time(), 60.0, 3) == []  # fresh: its message may still be queued
    ready = store.reap(time.time() + 120, 60.0, 3)
    assert [(r.node_id, r.attempt) for r in ready] == [("a", 1)]
    assert store.reap(time.time() + 121, 60.0, 3) == []  # re-sent just now
    assert store.count_waiting() >= 1


def test_reaper_resends_at_most_its_budget_oldest_first(store: Store) -> None:
    first, _ = start(store, {"a": []})
    time.sleep(0.01)
    start(store, {"a": []})
    later = time.time() + 120
    assert store.reap(later, 60.0, 3, resend_limit=0) == []
    assert [r.run_id for r in store.reap(later, 60.0, 3, resend_limit=1)] == [first]


def test_logs_are_ordered_filterable_and_incremental(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    base = len(store.get_logs(run_id))
    now = time.time()
    store.append_logs(
        run_id,
        [
            {"ts": now, "level": "info", "message": "one", "node_id": "a", "data": {"k": 1}},
            {"ts": now, "level": "warn", "message": "two", "node_id": None},
        ],
    )
    store.append_logs(run_id, [{"ts": now, "level": "error", "message": "three", "node_id": "a"}])
    entries = store.get_logs(run_id)
    assert [e.message for e in entries[base:]] == ["one", "two", "three"]
    ids = [e.id for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert entries[base].data == {"k": 1} and entries[base].level is LogLevel.INFO
    assert [e.message for e in store.get_logs(run_id, since=entries[base].id)] == ["two", "three"]
    assert [e.message for e in store.get_logs(run_id, node_id="a")][-2:] == ["one", "three"]
    assert store.get_logs("missing") == []


def test_stats_count_both_queues(store: Store) -> None:
    before = store.stats()
    done, _ = start(store, {"a": []})
    run_node(store, done, "a")
    running, _ = start(store, {"a": [], "b": []})
    store.claim(running, "a", 1, "t", LEASE)
    seed(store, {"a": []})
    stats = store.stats()
    assert stats.workflow.waiting - before.workflow.waiting == 1
    assert stats.workflow.active - before.workflow.active == 1
    assert stats.workflow.completed - before.workflow.completed == 1
    assert stats.node.active - before.node.active == 1
    assert stats.node.waiting - before.node.waiting == 1
    assert stats.node.completed - before.node.completed == 1


def test_statuses_of_many_runs_are_read_in_order_unknown_ones_as_none(store: Store) -> None:
    """``run_statuses`` is ``run_status`` of each id, in their order (repeats and unknown
    ids included: None, as ``run_status`` says for an unknown run)."""
    completed, _ = start(store, {"a": []})
    run_node(store, completed, "a")
    failed, _ = start(store, {"a": []})
    assert store.claim(failed, "a", 1, "t", LEASE) is not None
    store.fail(failed, "a", "t", ERR, None, [])
    cancelled = seed(store, {"a": []})
    store.cancel_run(cancelled)
    paused, _ = start(store, {"a": []})
    store.pause_run(paused)
    running, _ = start(store, {"a": []})
    pending = seed(store, {"a": []})  # created after the last admission
    ids = [pending, running, "no-such-run", paused, completed, failed, cancelled, running]
    expected = [
        RunStatus.PENDING,
        RunStatus.RUNNING,
        None,
        RunStatus.PAUSED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.RUNNING,
    ]
    assert store.run_statuses(ids) == expected
    assert store.run_statuses(ids) == [store.run_status(run_id) for run_id in ids]
    assert store.run_statuses(["no-such-run"]) == [None]
    assert store.run_statuses([]) == []


def test_statuses_of_more_runs_than_one_query_binds(store: Store) -> None:
    """More ids than SQLite binds in one query (it pages them), in order."""
    made = [seed(store, {"a": []}) for _ in range(ID_PAGE + 30)]
    store.cancel_run(made[-1])
    unknown = [f"unknown-{i}" for i in range(len(made))]
    ids = [run_id for pair in zip(unknown, made, strict=True) for run_id in pair]  # 2 * 530 ids
    statuses = store.run_statuses(ids)
    assert statuses[1::2] == [RunStatus.PENDING] * (len(made) - 1) + [RunStatus.CANCELLED]
    assert statuses[::2] == [None] * len(unknown)


def _socket_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reaches a socket from now on: through redis-py, or written by the store's own
    lines (one entry per write)."""
    sent: list[str] = []
    through_redis_py, written = redis.connection.AbstractConnection.send_packed_command, _Line.write

    def counted_redis_py(conn: Any, command: Any, check_health: bool = True) -> None:
        sent.append("redis-py")
        through_redis_py(conn, command, check_health)

    def counted_line(line: _Line, packed: bytes) -> None:
        sent.append("line")
        written(line, packed)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted_redis_py)
    monkeypatch.setattr(_Line, "write", counted_line)
    return sent


def test_redis_reads_many_statuses_in_one_round_trip(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("round trips are Redis's (SQLite: one query per 500 ids, tested above)")
    made = [seed(store, {"a": []}) for _ in range(200)]
    sent = _socket_writes(monkeypatch)
    assert store.run_statuses([*made, "no-such-run"]) == [RunStatus.PENDING] * len(made) + [None]
    assert len(sent) == 1


def _own_run(store: Store, **fields: Any) -> str:
    """A one-node run with every field a summary shows set (``fields`` override them)."""
    values: dict[str, Any] = {
        "id": codec.new_run_id(),
        "workflow": "wf",
        "digest": "d" * 32,
        "inputs": {"x": 1, "nested": {"list": [1, "two", None]}},
        "output": {"$ref": "a"},
        "created_at": time.time(),
        "priority": 7,
        "user_id": "u1",
        "organization_id": "acme",
        "trigger": "api",
        "trigger_data": {"batch": 3, "tags": ["a", "b"]},
        "workflow_id": "stored",
        "workflow_version": 4,
        **fields,
    }
    return store.create_run(NewRun(**values), [NodeSeed("a", "tests:fn", (), ())])


def _without_nodes(store: Store, run_id: str) -> Any:
    """``get_run`` of the run as a summary shows it: no nodes, so no output or error."""
    info = store.get_run(run_id)
    assert info is not None
    return info.model_copy(update={"nodes": {}, "output": None, "error": None})


def test_summaries_are_the_runs_own_fields_in_order_unknown_ones_as_none(store: Store) -> None:
    """``run_summaries`` is each run as ``get_run`` has it, without its nodes (as
    ``list_runs`` shows runs), in the order of the ids; None for an unknown id."""
    full = _own_run(store)
    unset = ("user_id", "organization_id", "trigger_data", "workflow_id", "workflow_version")
    bare = _own_run(store, **dict.fromkeys(unset))
    keyed = _own_run(store, idempotency_key="key-1", trigger="manual", priority=-3)
    store.admit(1000)
    completed = _own_run(store, inputs={})
    store.admit(1000)
    run_node(store, completed, "a", output={"big": "x" * 100})
    failed = _own_run(store)
    store.admit(1000)
    assert store.claim(failed, "a", 1, "t", LEASE) is not None
    store.fail(failed, "a", "t", ERR, None, [])
    cancelling = _own_run(store)
    store.admit(1000)
    assert store.claim(cancelling, "a", 1, "t", LEASE) is not None
    store.cancel_run(cancelling)  # asked, not ended: its node still runs
    child = _own_run(store, parent_run_id=full, parent_node_id="a")
    pending = _own_run(store)
    ids = [pending, full, "no-such-run", bare, keyed, completed, failed, cancelling, child, full]
    summaries = store.run_summaries(ids)
    assert [None if s is None else s.id for s in summaries] == [None if i == "no-such-run" else i for i in ids]
    for run_id, summary in zip(ids, summaries, strict=True):
        if run_id != "no-such-run":
            assert summary == _without_nodes(store, run_id), run_id
    by_id = {s.id: s for s in summaries if s is not None}
    assert by_id[full].organization_id == "acme" and by_id[full].trigger_data == {"batch": 3, "tags": ["a", "b"]}
    assert by_id[full].workflow_id == "stored" and by_id[full].workflow_version == 4
    assert by_id[bare].organization_id is None and by_id[bare].workflow_version is None
    assert by_id[completed].status is RunStatus.COMPLETED and by_id[completed].output is None
    assert by_id[failed].status is RunStatus.FAILED and by_id[failed].error is None
    assert by_id[cancelling].cancel_requested and by_id[child].parent_run_id == full
    assert by_id[pending].status is RunStatus.PENDING and by_id[keyed].status is RunStatus.RUNNING
    listed = {r.id: r for r in store.list_runs(None, None, 100)}
    assert all(listed[s.id] == s for s in by_id.values())  # what list_runs shows of each
    assert store.run_summaries(["no-such-run"]) == [None]
    assert store.run_summaries([]) == []


def test_summaries_of_more_runs_than_one_query_binds(store: Store) -> None:
    """More ids than SQLite binds in one query (it pages them), in order."""
    made = [seed(store, {"a": []}, workflow=f"wf{i}") for i in range(ID_PAGE + 30)]
    unknown = [f"unknown-{i}" for i in range(len(made))]
    ids = [run_id for pair in zip(unknown, made, strict=True) for run_id in pair]  # 2 * 530 ids
    summaries = store.run_summaries(ids)
    assert summaries[::2] == [None] * len(unknown)
    assert [(s.id, s.workflow) for s in summaries[1::2] if s is not None] == [
        (run_id, f"wf{i}") for i, run_id in enumerate(made)
    ]


def test_redis_reads_many_summaries_in_one_round_trip(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("round trips are Redis's (SQLite: one query per 500 ids, tested above)")
    made = [seed(store, {"a": [], "b": ["a"]}) for _ in range(200)]
    sent = _socket_writes(monkeypatch)
    summaries = store.run_summaries([*made, "no-such-run"])
    assert sent == ["line"]
    assert [s.id if s else None for s in summaries] == [*made, None]
    assert all(s.nodes == {} and s.status is RunStatus.PENDING for s in summaries if s)


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    first = seed(store, {"a": []}, workflow="one")
    time.sleep(0.002)
    second = seed(store, {"a": []}, workflow="two")
    time.sleep(0.002)
    third = seed(store, {"a": []}, workflow="one")
    store.cancel_run(third)
    assert [r.id for r in store.list_runs(None, None, 10)][:3] == [third, second, first]
    assert [r.id for r in store.list_runs("one", None, 10)] == [third, first]
    assert [r.id for r in store.list_runs("one", RunStatus.CANCELLED, 10)] == [third]
    assert len(store.list_runs(None, None, 2)) == 2


def test_idempotency_key_returns_the_existing_run(store: Store) -> None:
    first = seed(store, {"a": []}, idempotency_key="k1")
    assert seed(store, {"a": []}, idempotency_key="k1") == first
    assert seed(store, {"a": []}, idempotency_key="k2") != first


def test_purge_deletes_runs_finished_before_retention(store: Store) -> None:
    old, _ = start(store, {"a": []})
    run_node(store, old, "a")
    live = seed(store, {"a": []})
    assert store.purge(time.time() + 100, 50.0) == 1
    assert store.get_run(old) is None and store.get_logs(old) == []
    assert store.get_run(live) is not None
    assert old not in [r.id for r in store.list_runs(None, None, 50)]


def test_wait_finished_returns_within_its_timeout(store: Store) -> None:
    run_id, _ = start(store, {"a": []})
    started = time.monotonic()
    assert store.wait_finished(run_id, 0.2) is False  # never "finished" for a running run
    assert time.monotonic() - started < 1.5
    run_node(store, run_id, "a")
    started = time.monotonic()
    # A store that wakes waiters knows the run ended; another may say it does not know.
    assert store.wait_finished(run_id, 5.0) is store.finish_wakes_waiters
    assert time.monotonic() - started < 1.5


def test_a_wide_fan_in_waits_for_every_parent(store: Store) -> None:
    graph: dict[str, list[str]] = {f"p{i}": [] for i in range(50)}
    graph["join"] = list(graph)
    run_id, ready = start(store, graph)
    assert len(ready) == 50
    for i in range(49):
        assert run_node(store, run_id, f"p{i}", i) == []
    assert [r.node_id for r in run_node(store, run_id, "p49", 49)] == ["join"]
    claim = store.claim(run_id, "join", 1, "t", LEASE)
    assert claim is not None and claim.outputs == {f"p{i}": i for i in range(50)}


def test_a_branch_not_taken_is_skipped_and_the_join_runs(store: Store) -> None:
    graph = {"c": [], "yes": ["c"], "no": ["c"], "after_no": ["no"], "join": ["yes", "no"]}
    run_id, _ = start(store, graph, whens={"yes": ("c", True), "no": ("c", False)})
    assert [r.node_id for r in run_node(store, run_id, "c", True)] == ["yes"]
    assert statuses(store, run_id)["no"] == "skipped" and statuses(store, run_id)["after_no"] == "skipped"
    assert [r.node_id for r in run_node(store, run_id, "yes", "y")] == ["join"]
    claim = store.claim(run_id, "join", 1, "tj", LEASE)
    assert claim is not None and claim.outputs == {"yes": "y", "no": None}


def test_an_error_handler_gets_the_error_and_handles_the_failure(store: Store) -> None:
    run_id, _ = start(store, {"a": [], "h": ["a"]}, rules={"h": "one_failed"})
    store.claim(run_id, "a", 1, "ta", LEASE)
    assert [r.node_id for r in store.fail(run_id, "a", "ta", ERR, None, []).ready] == ["h"]
    claim = store.claim(run_id, "h", 1, "th", LEASE)
    assert claim is not None and claim.outputs["a"]["type"] == "ValueError"
    assert store.complete(run_id, "h", "th", codec.dumps("ok"), []).finished is RunStatus.COMPLETED
    info = store.get_run(run_id)
    assert info is not None and info.error is None and info.nodes["a"].status is NodeStatus.FAILED


def test_a_deferred_node_waits_and_remembers_when_to_wake(store: Store) -> None:
    run_id, _ = start(store, {"d": []})
    store.claim(run_id, "d", 1, "t1", LEASE)
    until = time.time() + 30
    progress = store.defer(run_id, "d", "t1", until, True, [])
    (ready,) = progress.ready
    assert (ready.node_id, ready.attempt, ready.eta) == ("d", 1, pytest.approx(until))
    assert statuses(store, run_id)["d"] == "waiting" and store.count_waiting() >= 1
    claim = store.claim(run_id, "d", 1, "t2", LEASE)
    assert claim is not None and claim.wake_at == pytest.approx(until)
    store.defer(run_id, "d", "t2", time.time() + 1, False, [])  # a rate-limit pause: queued
    assert statuses(store, run_id)["d"] == "queued"


def test_a_map_runs_its_items_in_windows_and_gathers_results_in_order(store: Store) -> None:
    run_id, _ = start(store, {"src": [], "m": ["src"], "after": ["m"]})
    run_node(store, run_id, "src", [1, 2, 3])
    store.claim(run_id, "m", 1, "tm", LEASE)
    progress = store.expand(run_id, "m", "tm", ['"a"', '"b"', '"c"'], 2, [])
    assert [r.node_id for r in progress.ready] == ["m[0]", "m[1]"]
    claim = store.claim(run_id, "m[1]", 1, "i1", LEASE)
    assert claim is not None and (claim.map_of, claim.item) == ("m", "b") and claim.outputs == {"src": [1, 2, 3]}
    assert [r.node_id for r in store.complete(run_id, "m[1]", "i1", codec.dumps("B"), []).ready] == ["m[2]"]
    assert run_node(store, run_id, "m[2]", "C") == []
    assert [r.node_id for r in run_node(store, run_id, "m[0]", "A")] == ["m"]  # all items done: gather
    assert statuses(store, run_id)["m"] == "queued"
    assert [r.node_id for r in gather(store, run_id, "m")] == ["after"]
    info = store.get_run(run_id)
    assert info is not None and list(info.nodes) == ["src", "m", "after"]
    assert info.nodes["m"].output == ["A", "B", "C"] and info.nodes["m"].items_total == 3
    assert info.nodes["m"].items_done == 3 and info.nodes["m"].status is NodeStatus.COMPLETED


def test_items_do_not_read_the_list_they_came_from(store: Store) -> None:
    run_id, _ = start(store, {"src": [], "k": [], "m": ["src", "k"]}, item_parents={"m": ("k",)})
    run_node(store, run_id, "src", list(range(1000)))
    run_node(store, run_id, "k", 7)
    store.claim(run_id, "m", 1, "tm", LEASE)
    store.expand(run_id, "m", "tm", ["1", "2"], None, [])
    claim = store.claim(run_id, "m[1]", 1, "i1", LEASE)
    assert claim is not None and claim.item == 2 and claim.outputs == {"k": 7}


def test_a_failed_item_fails_the_map_and_cancels_the_rest(store: Store) -> None:
    run_id, _ = start(store, {"m": [], "after": ["m"]})
    store.claim(run_id, "m", 1, "tm", LEASE)
    store.expand(run_id, "m", "tm", ["1", "2", "3"], None, [])
    store.claim(run_id, "m[0]", 1, "i0", LEASE)
    progress = store.fail(run_id, "m[0]", "i0", ERR, None, [])
    assert progress.ready == [] and progress.finished is RunStatus.FAILED
    assert statuses(store, run_id) == {"m": "failed", "after": "skipped"}
    assert store.claim(run_id, "m[1]", 1, "i1", LEASE) is None


def test_a_map_under_all_done_keeps_failed_items_as_errors(store: Store) -> None:
    run_id, _ = start(store, {"m": []}, rules={"m": "all_done"})
    store.claim(run_id, "m", 1, "tm", LEASE)
    store.expand(run_id, "m", "tm", ["1", "2"], None, [])
    store.claim(run_id, "m[0]", 1, "i0", LEASE)
    store.fail(run_id, "m[0]", "i0", ERR, None, [])
    assert [r.node_id for r in run_node(store, run_id, "m[1]", 20)] == ["m"]
    assert gather(store, run_id, "m") == []
    info = store.get_run(run_id)
    assert info is not None and info.status is RunStatus.COMPLETED
    assert info.nodes["m"].output[0]["type"] == "ValueError" and info.nodes["m"].output[1] == 20


def test_a_map_over_nothing_completes_at_once(store: Store) -> None:
    run_id, _ = start(store, {"m": [], "after": ["m"]})
    store.claim(run_id, "m", 1, "tm", LEASE)
    assert [r.node_id for r in store.expand(run_id, "m", "tm", [], 4, []).ready] == ["after"]


def test_a_node_waiting_for_a_child_run_holds_no_lease_and_ends_with_cancel(store: Store) -> None:
    run_id, _ = start(store, {"sub": []})
    store.claim(run_id, "sub", 1, "ts", 1.0)
    child = seed(store, {"x": []}, parent=(run_id, "sub"))
    assert store.await_child(run_id, "sub", "ts", child, []).accepted
    assert store.reap(time.time() + 100, 1000.0, 3) == []  # no lease to expire
    assert store.child_runs(run_id) == [child]
    assert store.start_run(child) and store.awaiting_children() == []
    run_node(store, child, "x", 7)
    assert store.awaiting_children() == [(run_id, "sub", child)]
    child_info = store.get_run(child)
    assert child_info is not None and child_info.parent_run_id == run_id and child_info.parent_node_id == "sub"
    assert store.complete(run_id, "sub", f"@sub:{child}", codec.dumps(7), []).finished is RunStatus.COMPLETED


def test_cancel_ends_nodes_waiting_on_items_or_children(store: Store) -> None:
    run_id, _ = start(store, {"m": [], "sub": []})
    store.claim(run_id, "m", 1, "tm", LEASE)
    store.expand(run_id, "m", "tm", ["1", "2"], 1, [])
    store.claim(run_id, "sub", 1, "ts", LEASE)
    store.await_child(run_id, "sub", "ts", "child-id", [])
    assert store.cancel_run(run_id) is RunStatus.CANCELLED
    assert statuses(store, run_id) == {"m": "cancelled", "sub": "cancelled"}


def test_token_bucket_is_shared(store: Store) -> None:
    assert store.take_token("api", 2, 1.0) == 0.0
    assert store.take_token("api", 2, 1.0) == 0.0
    wait = store.take_token("api", 2, 1.0)
    assert 0.2 < wait <= 0.5
    assert store.take_token("other", 2, 1.0) == 0.0


def test_token_bucket_takes_many_tokens_at_once_or_none(store: Store) -> None:
    """``tokens=n`` takes n at once, as n calls would; a refusal takes none and says how
    long until the bucket holds all n (5 per 100 s here: 20 s a token, so the time the
    test takes refills nothing that matters)."""
    assert store.take_token("many", 5, 100.0, tokens=3) == 0.0  # 2 left
    assert 19.0 < store.take_token("many", 5, 100.0, tokens=3) <= 20.0  # one short
    assert store.take_token("many", 5, 100.0, tokens=2) == 0.0  # the refusal took none
    assert 99.0 < store.take_token("many", 5, 100.0, tokens=5) <= 100.0  # empty: a whole bucket
    assert 19.0 < store.take_token("many", 5, 100.0) <= 20.0  # one at a time: the same bucket
    for bad in (0, -1, 6):
        with pytest.raises(ValueError, match="tokens must be 1 to 5"):
            store.take_token("many", 5, 100.0, tokens=bad)
    assert store.take_token("fast", 5, 1.0, tokens=5) == 0.0
    wait = store.take_token("fast", 5, 1.0, tokens=2)
    assert 0.0 < wait <= 0.4
    time.sleep(wait + 0.02)  # as long as it said: then they are there
    assert store.take_token("fast", 5, 1.0, tokens=2) == 0.0


def test_token_bucket_takes_many_atomically(store: Store) -> None:
    """Concurrent takes of 3 from a bucket of 10 (nothing refills within the test): three
    succeed, the others take nothing (9 tokens gone, one left for a single take)."""
    results: list[float] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        results.append(store.take_token("race", 10, 36_000.0, tokens=3))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r == 0.0 for r in results) == [False] * 5 + [True] * 3
    assert store.take_token("race", 10, 36_000.0) == 0.0
    assert store.take_token("race", 10, 36_000.0) > 0


def test_concurrency_slots_are_taken_released_and_expire(store: Store) -> None:
    assert store.acquire_slot("k", "h1", 1, 30.0)
    assert store.acquire_slot("k", "h1", 1, 30.0)  # the holder again: still its slot
    assert not store.acquire_slot("k", "h2", 1, 30.0)
    store.release_slot("k", "h1")
    assert store.acquire_slot("k", "h2", 1, 0.05)
    time.sleep(0.1)
    assert store.acquire_slot("k", "h3", 1, 30.0)  # h2's slot expired (its worker died)
    store.renew_slots([("k", "h3")], 30.0)


def test_lua_decide_matches_the_planner(request: pytest.FixtureRequest) -> None:
    """The Redis scripts mirror planner.decide and skip_outcome; check every rule on every
    tally up to 3 parents."""
    store = RedisStore.from_url(request.getfixturevalue("redis_url"))
    lib = redis_scripts.helpers()
    script = store.r.register_script(
        lib + "return {decide(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),"
        " tonumber(ARGV[5])), skip_outcome(ARGV[1], tonumber(ARGV[4]))}"
    )
    for rule in Rule:
        for total in range(4):
            for ok, failed, skipped in itertools.product(range(total + 1), repeat=3):
                if ok + failed + skipped > total:
                    continue
                expected: Decision = decide(rule, total, ok, failed, skipped)
                got = script(keys=[f"k{i}" for i in range(14)], args=[rule.value, total, ok, failed, skipped])
                assert got == [expected.value, skip_outcome(rule, failed)], (rule, total, ok, failed, skipped)
    store.close()


def test_purge_pages_through_many_finished_runs_and_expired_history(store: Store) -> None:
    """More runs than one page; on Redis, history entries whose run expired by TTL go too,
    while entries younger than the retention are not even looked at."""
    ended = []
    for _ in range(1203):
        run_id, _ready = start(store, {"a": []})
        run_node(store, run_id, "a")
        ended.append(run_id)
    live = seed(store, {"a": []})
    assert store.purge(time.time() + 100, 50.0) == len(ended)
    listed = [r.id for r in store.list_runs(None, None, 2000)]
    assert listed == [live]
    if isinstance(store, RedisStore):  # a run whose keys expired leaves a history entry
        gone = seed(store, {"a": []})
        store.r.delete(*store._keys(gone))
        store.purge(time.time() + 100, 50.0)
        for index in ("runs", "wf:wf"):  # the global history and the workflow's
            assert store.r.zscore(store._g(index), gone) is None
            assert store.r.zscore(store._g(index), live) is not None


def test_a_finished_run_says_whether_runs_wait_for_its_slot(store: Store) -> None:
    """A worker admits after a run ends only when runs may be waiting (Redis counts them
    in the run's bookkeeping; SQLite always says so: its admission is one transaction)."""
    first, _ = start(store, {"a": []})
    second = seed(store, {"a": []})  # created while the first runs: waits for admission
    claim = store.claim(first, "a", 1, "t1", LEASE)
    assert claim is not None
    progress = store.complete(first, "a", "t1", "1", [])
    assert progress.finished is RunStatus.COMPLETED and progress.admit
    assert [r.run_id for r in store.admit(1000)] == [second]
    claim = store.claim(second, "a", 1, "t2", LEASE)
    assert claim is not None
    progress = store.complete(second, "a", "t2", "2", [])
    assert progress.finished is RunStatus.COMPLETED
    assert progress.admit is not isinstance(store, RedisStore)  # nothing waits any more


def test_token_bucket_calls_microseconds_apart_never_wait_for_rounding(store: Store) -> None:
    """Back-to-back calls within the budget never see a wait made of clock rounding."""
    for i in range(300):
        assert store.take_token(f"burst{i}", 3, 1.0) == 0.0
        assert store.take_token(f"burst{i}", 3, 1.0) == 0.0
        assert store.take_token(f"burst{i}", 3, 1.0) == 0.0
