"""Run transitions as a Redis function library (Redis 7), and back to scripts when needed.

The contract tests run every store test on both forms (the ``redis`` and ``redis-scripts``
stores of tests/conftest.py); these check how the library is loaded and found again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from autoflow.models import RunStatus
from autoflow.store.redis import RedisStore
from tests.conftest import start_redis
from tests.store.test_contract import run_node, start


@pytest.fixture
def private(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (its functions are deleted here)."""
    url, stop = start_redis(tmp_path)
    yield url
    stop()


def _libraries(url: str) -> list[str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [dict(zip(lib[::2], lib[1::2], strict=True))["library_name"] for lib in r.function_list()]
    finally:
        r.close()


def _status(store: RedisStore, run_id: str) -> RunStatus:
    info = store.get_run(run_id)
    assert info is not None
    return info.status


def _chain(store: RedisStore) -> str:
    run_id, ready = start(store, {"a": [], "b": ["a"]})
    assert [m.node_id for m in ready] == ["a"]
    assert [m.node_id for m in run_node(store, run_id, "a")] == ["b"]
    run_node(store, run_id, "b")
    return run_id


def test_transitions_are_functions_of_one_library_named_by_its_text(private: str) -> None:
    store = RedisStore.from_url(private, namespace="fn")
    try:
        run_id = _chain(store)
        assert _status(store, run_id) is RunStatus.COMPLETED
        function = store._wire.function("complete")
        assert function is not None and function.startswith("autoflow_")
        assert _libraries(private) == [function.rsplit("_", 1)[0]]
        calls = redis.Redis.from_url(private).info("commandstats")
        assert calls["cmdstat_fcall"]["calls"] >= 5  # start, 2 claims, 2 completions
    finally:
        store.close()


def test_a_server_that_lost_the_library_gets_it_again(private: str) -> None:
    store = RedisStore.from_url(private, namespace="fn")
    try:
        _chain(store)
        r = redis.Redis.from_url(private)
        r.function_flush()  # as after a restart without persistence
        assert _libraries(private) == []
        run_id = _chain(store)
        assert _status(store, run_id) is RunStatus.COMPLETED
        assert len(_libraries(private)) == 1
    finally:
        store.close()


def test_a_client_refused_functions_runs_scripts(private: str) -> None:
    """A user whose ACL forbids FUNCTION (or a server without functions) still works."""
    admin = redis.Redis.from_url(private)
    all_but_functions = ["+@all", "-function"]
    admin.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=all_but_functions)
    host, port = admin.connection_pool.connection_kwargs["host"], admin.connection_pool.connection_kwargs["port"]
    store = RedisStore.from_url(f"redis://app:pw@{host}:{port}/0", namespace="acl")
    try:
        run_id = _chain(store)
        assert _status(store, run_id) is RunStatus.COMPLETED
        assert store._wire.function("complete") is None
        assert _libraries(private) == []
    finally:
        store.close()


def test_a_server_that_lost_its_scripts_gets_them_again(private: str) -> None:
    """The same for the scripts (a server without functions, after a restart)."""
    store = RedisStore.from_url(private, namespace="sc")
    store.use_scripts()
    try:
        _chain(store)
        redis.Redis.from_url(private).script_flush()
        run_id = _chain(store)  # creation (a pipeline), admission and transitions
        assert _status(store, run_id) is RunStatus.COMPLETED
        assert _libraries(private) == []
    finally:
        store.close()
