"""Run transitions as a Redis function library (Redis 7), and back to scripts when needed.

The contract tests run every store test on both forms (the ``redis`` and ``redis-scripts``
stores of tests/conftest.py); these check how the library is loaded and found again.
"""

from __future__ import annotations

import re
import shutil
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

import autoflow as af
from autoflow.errors import BackendError
from autoflow.models import RunStatus
from autoflow.store import redis_scripts
from autoflow.store.redis import RedisStore
from autoflow.store.redis_scripts import functions_unavailable
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
        # Opening the store loaded the library (it checks it at open); no transition called it.
        assert "cmdstat_fcall" not in redis.Redis.from_url(private).info("commandstats")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("bug", "said"),
    [
        ("local broken = = 1", "Error compiling function"),
        ("undefined_helper()", "nonexistent global variable 'undefined_helper'"),
    ],
)
def test_a_library_the_server_refuses_fails_the_store_open(
    private: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: str, said: str
) -> None:
    """A bug in our Lua is not hidden by the scripts: opening the store says which library
    the server refused and quotes the server's reply."""
    copy = tmp_path / "store"
    shutil.copytree(Path(redis_scripts.__file__).parent / "lua", copy / "lua")
    lib = copy / "lua" / "lib.lua"
    lib.write_text(f"{lib.read_text()}\n{bug}\n")
    monkeypatch.setattr(redis_scripts, "resources", types.SimpleNamespace(files=lambda package: copy))
    with pytest.raises(BackendError) as caught:
        RedisStore.from_url(private, namespace="bug")
    message = str(caught.value)
    assert caught.value.url == private
    assert re.search(r"function library 'autoflow_[0-9a-f]{12}' \(FUNCTION LOAD\)", message), message
    assert said in message
    assert _libraries(private) == []


@pytest.mark.parametrize("renamed", ['""', "FUNCTION_SECRET"])
def test_a_server_with_function_disabled_or_renamed_runs_scripts(tmp_path: Path, renamed: str) -> None:
    """FUNCTION disabled or renamed (rename-command): the server answers "unknown command",
    as Redis 6 does; the transitions run as scripts."""
    url, stop = start_redis(tmp_path, "--rename-command", "FUNCTION", renamed)
    store = RedisStore.from_url(url, namespace="renamed")
    try:
        assert store._wire.function("complete") is None
        run_id = _chain(store)
        assert _status(store, run_id) is RunStatus.COMPLETED
        calls = redis.Redis.from_url(url).info("commandstats")
        assert "cmdstat_fcall" not in calls and calls["cmdstat_evalsha"]["calls"] >= 5
    finally:
        store.close()
        stop()


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ResponseError("unknown command `FUNCTION`, with args beginning with: `LOAD`, `REPLACE`, "), True),  # 6.2
        (ResponseError("unknown command 'FUNCTION', with args beginning with: 'LOAD' 'REPLACE' "), True),  # 7
        (ResponseError("ERR unknown command 'FUNCTION'"), True),  # a prefix a client did not strip
        (ResponseError("unknown subcommand 'LOAD'. Try FUNCTION HELP."), True),
        (NoPermissionError("this user has no permissions to run the 'function|load' command"), True),
        (ResponseError("Error compiling function: user_function:2: unexpected symbol near '='"), False),
        (ResponseError("Error registering functions: ERR user_function:9: Script attempted to ..."), False),
        (ResponseError("OOM command not allowed when used memory > 'maxmemory'."), False),
    ],
)
def test_which_refusals_mean_no_functions_here(error: ResponseError, unavailable: bool) -> None:
    assert functions_unavailable(error) is unavailable


@af.node
def _inc(x: int) -> int:
    return x + 1


@af.workflow
def _two_steps(x: int):
    return _inc(_inc(x))


def test_a_client_told_not_to_use_functions_runs_scripts(
    private: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AUTOFLOW_REDIS_FUNCTIONS=false (e.g. behind a proxy that refuses FUNCTION): no
    library is loaded, every transition goes as a script."""
    monkeypatch.setenv("AUTOFLOW_REDIS_FUNCTIONS", "false")
    settings = af.Settings(home=tmp_path / "home", namespace="nofn")
    assert settings.redis_functions is False
    client = af.Client(private, settings=settings, workers=2)
    try:
        assert client.execute(_two_steps, x=1).result(timeout=20) == 3
        calls = redis.Redis.from_url(private).info("commandstats")
        assert "cmdstat_fcall" not in calls and "cmdstat_function|load" not in calls
        assert calls["cmdstat_evalsha"]["calls"] >= 3  # start, claim, completions
        assert _libraries(private) == []
    finally:
        client.close()


def test_runs_of_one_digest_with_different_graphs_keep_their_own_topology(private: str) -> None:
    """The function library keeps parsed topology across calls by the hash of a run's
    entries (topo_id), not by its definition's digest: two graphs under one digest (the
    store allows it) each settle their own children, calls interleaved."""
    store = RedisStore.from_url(private, namespace="topo")
    try:
        first, ready_first = start(store, {"a": [], "b": ["a"]})
        second, ready_second = start(store, {"a": [], "c": ["a"], "d": ["a"]})
        assert [m.node_id for m in ready_first] == ["a"] and [m.node_id for m in ready_second] == ["a"]
        assert [m.node_id for m in run_node(store, first, "a")] == ["b"]
        assert sorted(m.node_id for m in run_node(store, second, "a")) == ["c", "d"]
        assert run_node(store, first, "b") == []
        assert _status(store, first) is RunStatus.COMPLETED
        run_node(store, second, "c")
        run_node(store, second, "d")
        assert _status(store, second) is RunStatus.COMPLETED
        ids = {store.r.hget(f"topo:{{{run}}}:run", "topo_id") for run in (first, second)}
        assert len(ids) == 2 and None not in ids
    finally:
        store.close()
