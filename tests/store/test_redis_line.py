"""The hot path's connections used at the socket (store/redis_line.py): replies, errors,
broken connections, a server that stops answering, threads and forks."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoflow.store import redis_line
from autoflow.store.redis_line import Lines, pack_head, pack_with_head


@pytest.fixture(autouse=True)
def _not_returning() -> Iterator[None]:
    """A test that marks its thread as a queue consumer's (``returning``) unmarks it."""
    yield
    redis_line._later.__dict__.clear()


@pytest.fixture
def lines(redis_url: str) -> Iterator[Lines]:
    made = Lines(redis.ConnectionPool.from_url(redis_url, decode_responses=True))
    yield made
    made.close()


def test_replies_come_back_decoded_as_redis_py_would(lines: Lines) -> None:
    key = f"line:{os.getpid()}:{time.time_ns()}"
    assert lines.send("RPUSH", key, "a", b"b", 3, 1.5) == 4
    assert lines.send("LRANGE", key, 0, -1) == ["a", "b", "3", "1.5"]
    assert lines.send("GET", f"{key}:missing") is None
    assert lines.send("DEL", key) == 1


def test_a_batch_reads_every_reply_and_returns_errors_in_place(lines: Lines) -> None:
    key = f"line:{time.time_ns()}"
    replies = lines.send_many([("SET", key, "x"), ("LPUSH", key, "y"), ("EVALSHA", "0" * 40, 0), ("GET", key)])
    assert replies[0] == "OK"
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert isinstance(replies[2], NoScriptError)  # redis-py's class, as callers expect
    assert replies[3] == "x"  # the connection stayed in step
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        lines.send("LPUSH", key, "y")
    assert lines.send("DEL", key) == 1


def test_a_killed_connection_is_replaced_and_the_command_sent_again(lines: Lines, redis_url: str) -> None:
    first = lines.send("CLIENT", "ID")
    admin = redis.Redis.from_url(redis_url)
    assert admin.client_kill_filter(_id=first) == 1
    admin.close()
    assert lines.send("ECHO", "again") == "again"  # sent once more on a new connection
    assert lines.send("CLIENT", "ID") != first


def test_a_server_that_stops_answering_times_out_instead_of_hanging() -> None:
    """A listener that accepts and then says nothing: the kernel timeout ends the read."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)  # the handshake-free connection's first command, never answered

    threading.Thread(target=accept, daemon=True).start()
    silent = Lines(redis.ConnectionPool(host="127.0.0.1", port=port, socket_timeout=0.3, socket_connect_timeout=1))
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        silent.send("PING")
    assert time.monotonic() - started < 3  # two tries of 0.3 s each, not a hang
    silent.close()
    server.close()
    for conn in accepted:
        conn.close()


def test_each_thread_and_each_forked_process_has_its_own_connection(lines: Lines, redis_url: str) -> None:
    ids: dict[str, int] = {"main": lines.send("CLIENT", "ID")}

    def other() -> None:
        ids["thread"] = lines.send("CLIENT", "ID")

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert ids["thread"] != ids["main"]
    assert lines.send("CLIENT", "ID") == ids["main"]  # kept, not reopened
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not use its parent's socket
        try:
            os.write(write, str(lines.send("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert int(os.read(read, 64)) not in (ids["main"], ids["thread"])
    assert lines.send("CLIENT", "ID") == ids["main"]  # the parent's connection is intact


def test_a_command_put_off_goes_ahead_of_the_next_trip_to_the_same_server(redis_url: str) -> None:
    """A queue consumer's thread (``returning``) may put a command off: it rides ahead of
    the next round trip to that server, on any pool, and its reply is handed over first."""
    store = Lines(redis.ConnectionPool.from_url(redis_url, decode_responses=True))
    queue = Lines(redis.ConnectionPool.from_url(redis_url))  # another pool: bytes, like Huey's
    key = f"later:{time.time_ns()}"
    seen: list[object] = []
    try:
        assert not store.later(("SET", key, "x"), seen.append)  # not a returning thread: send now
        queue.returning()
        assert store.later(("INCR", key), seen.append)
        assert store.later(("LPUSH", key, "wrong type"), seen.append)
        assert seen == []
        assert store.send("EXISTS", key) == 1  # the store's own next trip carried them
        assert seen[0] == 1 and isinstance(seen[1], ResponseError)
        assert store.later(("INCR", key), lambda reply: seen.append(("second", reply)))
        assert queue.send("GET", key) == b"2"  # carried by the queue's trip, before its GET
        assert seen[-1] == ("second", 2)
    finally:
        store.send("DEL", key)
        store.close()
        queue.close()


def test_a_command_put_off_survives_a_broken_trip(redis_url: str) -> None:
    lines = Lines(redis.ConnectionPool.from_url(redis_url, decode_responses=True))
    key = f"later:{time.time_ns()}"
    seen: list[object] = []
    try:
        lines.returning()
        first = lines.send("CLIENT", "ID")
        admin = redis.Redis.from_url(redis_url)
        admin.client_kill_filter(_id=first)
        admin.close()
        assert lines.later(("INCR", key), seen.append)
        assert lines.send("ECHO", "after") == "after"  # the trip is made again, with it
        assert seen == [1] and lines.send("GET", key) == "1"
    finally:
        lines.send("DEL", key)
        lines.close()


def test_a_finished_threads_connection_is_closed(redis_url: str) -> None:
    lines = Lines(redis.ConnectionPool.from_url(redis_url))
    ids: list[int] = []

    def once() -> None:
        ids.append(lines.send("CLIENT", "ID"))

    for _ in range(5):
        worker = threading.Thread(target=once)
        worker.start()
        worker.join()
    admin = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and {c["id"] for c in admin.client_list()} & set(ids):
        time.sleep(0.01)
    assert not {c["id"] for c in admin.client_list()} & set(ids)
    admin.close()
    lines.close()


def test_a_send_from_a_callback_during_a_trip_takes_a_spare_connection(redis_url: str) -> None:
    """A put-off command's callback runs while its trip is under way: a send it makes on
    the same Lines must not read that trip's replies."""
    lines = Lines(redis.ConnectionPool.from_url(redis_url, decode_responses=True))
    key = f"later:{time.time_ns()}"
    nested: list[object] = []
    try:
        lines.returning()
        assert lines.later(("INCR", key), lambda reply: nested.append(lines.send("INCRBY", key, 10)))
        assert lines.send("ECHO", "outer") == "outer"
        assert nested == [11]
    finally:
        lines.send("DEL", key)
        lines.close()


def test_a_put_off_command_whose_reply_was_handed_over_is_not_sent_again(redis_url: str) -> None:
    lines = Lines(redis.ConnectionPool.from_url(redis_url, decode_responses=True, socket_timeout=0.3))
    key = f"later:{time.time_ns()}"
    seen: list[object] = []
    try:
        lines.returning()
        assert lines.later(("INCR", key), seen.append)
        with pytest.raises(RedisTimeoutError):  # the trip's own reply never comes in time
            lines.send("BLPOP", f"{key}:empty", 2, again_after_timeout=False)
        lines.flush()
        assert seen == [1] and lines.send("GET", key) == "1"
    finally:
        lines.send("DEL", key)
        lines.close()


def test_a_command_packed_from_a_cached_head_is_the_command_packed_whole() -> None:
    head = ("FCALL", "autoflow_x_complete", 2, "ns:{r1}:run", "ns:{r1}:é")
    for args in (("node", "tok", '{"a": 1}', 1000, "", 15.0, 2, "l1", "l2"), (), (b"\x00bin", -1, 3.25)):
        assert pack_with_head(pack_head(head), len(head), args) == pack_command(head + args)
