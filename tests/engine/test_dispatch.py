"""The wire format: JSON only, signed when a secret is set; forged messages never run."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import threading
import time
from pathlib import Path

import pytest
import redis

import autoflow as af
from autoflow.engine.dispatch import NODE_TASK, HueyDispatcher, JsonSerializer, MessageError
from autoflow.store.base import Ready

NAME = f"autoflow.engine.dispatch.{NODE_TASK}"


def message(**over: object) -> object:
    from huey.registry import Message

    fields = {
        "id": "r:n:1",
        "name": NAME,
        "eta": None,
        "retries": 0,
        "retry_delay": 0,
        "priority": 3,
        "args": ("run", "node", 1),
        "kwargs": {},
    }
    fields.update(over)
    return Message(**fields)


def test_messages_are_plain_json_carrying_only_ids() -> None:
    ser = JsonSerializer()
    data = ser.serialize(message(eta=dt.datetime(2026, 1, 1, 12, 0)))
    assert data.startswith(b"{") and b"pickle" not in data
    back = ser.deserialize(data)
    assert back.args == ("run", "node", 1) and back.priority == 3 and back.eta == dt.datetime(2026, 1, 1, 12, 0)


def test_signed_messages_reject_tampering_and_other_secrets() -> None:
    signed = JsonSerializer(b"s3cret")
    data = signed.serialize(message())
    assert signed.deserialize(data).args == ("run", "node", 1)
    with pytest.raises(MessageError, match="signature"):
        signed.deserialize(data.replace(b'"node"', b'"evil"'))
    with pytest.raises(MessageError, match="signature"):
        JsonSerializer(b"other").deserialize(data)
    with pytest.raises(MessageError, match="signature"):
        signed.deserialize(JsonSerializer().serialize(message()))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"name": NAME}),
        b'{"name": "os.system", "args": ["rm -rf /"]}',
        b'{"name": "' + NAME.encode() + b'", "args": ["run", "node", "1"]}',
        b'{"name": "' + NAME.encode() + b'", "args": ["run"]}',
        b"not json",
    ],
)
def test_forged_or_malformed_messages_are_refused(payload: bytes) -> None:
    with pytest.raises(MessageError):
        JsonSerializer().deserialize(payload)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/autoflow-pwned",))


def test_a_pickle_pushed_into_redis_never_executes(redis_url: str, settings: af.Settings, tmp_path: Path) -> None:
    """The attack from the reliability notes: LPUSH a malicious pickle into the queue."""
    marker = Path("/tmp/autoflow-pwned")
    marker.unlink(missing_ok=True)
    client = af.Client(redis_url, settings=settings, workers=1)
    client.start()
    queue = f"huey.redis.{settings.namespace}_nodes"
    raw = redis.Redis.from_url(redis_url)
    raw.zadd(queue, {b"\x00" * 8 + pickle.dumps(_Boom()): 0})
    time.sleep(1.5)
    client.close()
    assert not marker.exists()
    assert raw.zcard(queue) == 0  # consumed and dropped


def test_sqlite_dispatcher_orders_by_priority_and_honours_eta(tmp_path: Path) -> None:
    dispatcher = HueyDispatcher.sqlite(str(tmp_path / "q.db"), namespace="t")
    seen: list[tuple[str, float]] = []
    done = threading.Event()

    def handler(run_id: str, node_id: str, attempt: int) -> None:
        seen.append((node_id, time.monotonic()))
        if len(seen) == 4:
            done.set()

    dispatcher.node_handler = handler
    started = time.monotonic()
    dispatcher.send([Ready("r", "low", 1, 0), Ready("r", "high", 1, 9), Ready("r", "mid", 1, 5)])
    dispatcher.send([Ready("r", "later", 1, 99, eta=time.time() + 0.5)])
    consumer = dispatcher.consumer("nodes", workers=1)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    assert done.wait(10)
    consumer.stop()
    assert [name for name, _ in seen] == ["high", "mid", "low", "later"]
    assert seen[-1][1] - started >= 0.45


def test_closing_a_redis_client_releases_every_connection(redis_url: str, settings: af.Settings) -> None:
    watcher = redis.Redis.from_url(redis_url)

    def connected() -> set[str]:
        return {c["id"] for c in watcher.client_list()}

    before = connected()
    client = af.Client(redis_url, settings=settings, workers=0)
    run = client.execute(_noop_flow)  # uses the store's pool and the queue's pool
    assert not run.status().finished  # admitted here, its node queued: no worker runs it
    opened = connected() - before
    assert len(opened) >= 2
    client.close()
    # The server notices a closed socket on its next event-loop turn, not instantly.
    deadline = time.monotonic() + 5
    while opened & connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not opened & connected()
    watcher.close()


@af.node
def _noop(x: int = 0) -> int:
    return x


@af.workflow
def _noop_flow(x: int = 0):
    return _noop(x)


@af.node
def _two(x: int = 0) -> int:
    return x


@af.workflow(name="two_roots")
def _two_roots(x: int = 0):
    return [_two(x), _two(x)]


def _queued(redis_url: str, settings: af.Settings) -> list[tuple[str, str, int]]:
    """The node messages waiting in the Redis queue: (run, node, attempt)."""
    raw = redis.Redis.from_url(redis_url)
    try:
        members = raw.zrange(f"huey.redis.{settings.namespace}_nodes", 0, -1)
    finally:
        raw.close()
    return [tuple(JsonSerializer().deserialize(m[8:]).args) for m in members]  # type: ignore[misc]


def test_execute_starts_a_run_and_queues_its_roots_in_its_second_round_trip(
    redis_url: str, settings: af.Settings
) -> None:
    """On Redis the start of an admitted run and its roots' messages go out together:
    each root gets exactly one message, with the start's attempt."""
    client = af.Client(redis_url, settings=settings, workers=0)
    try:
        run = client.execute(_two_roots, x=1)
        assert run.status().status is af.RunStatus.RUNNING
        assert sorted(_queued(redis_url, settings)) == sorted([(run.id, "_two", 1), (run.id, "_two_2", 1)])
    finally:
        client.close()


def test_a_run_waiting_for_a_slot_sends_no_message(redis_url: str, settings: af.Settings) -> None:
    one = settings.model_copy(update={"workflow_concurrency": 1})
    client = af.Client(redis_url, settings=one, workers=0)
    try:
        first = client.execute(_two_roots, x=1)
        second = client.execute(_two_roots, x=2)
        assert second.status().status is af.RunStatus.PENDING
        assert {run for run, _, _ in _queued(redis_url, settings)} == {first.id}
    finally:
        client.close()


def test_a_root_message_of_a_run_cancelled_before_any_worker_took_it_is_dropped(
    redis_url: str, settings: af.Settings
) -> None:
    """Messages are only hints: the claim (fenced by the node's state) refuses one whose
    run no longer wants it, so nothing runs."""
    client = af.Client(redis_url, settings=settings, workers=0)
    try:
        run = client.execute(_two_roots, x=1)
        client.cancel(run.id)
        store = client.backend.store
        assert store.claim(run.id, "_two", 1, "token", 5.0) is None
        assert run.status().status is af.RunStatus.CANCELLED
    finally:
        client.close()
