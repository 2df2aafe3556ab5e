"""Shipping notebook code by value to remote workers (opt-in, signed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import autoflow as af
from autoflow.engine.shipping import CodeRefused, blob_key, code_hash, pack, unpack
from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
SECRET = "correct horse battery staple"


def as_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Pretend ``fn`` was defined in a notebook cell (module ``__main__``)."""
    fn.__module__ = "__main__"
    fn.__qualname__ = fn.__name__
    return fn


def cube_fn(x: int) -> int:
    return x**3


cube = af.node(as_main(cube_fn))


@af.workflow
def shipped(x: int = 2):
    return cube(x)


def test_pack_and_unpack_round_trip_with_the_same_secret() -> None:
    blob = pack({cube.key: cube}, b"s1")
    nodes = unpack(blob, b"s1")
    assert nodes[cube.key](4) == 64 and nodes[cube.key].key == cube.key
    with pytest.raises(CodeRefused, match="bad signature"):
        unpack(blob, b"other")
    with pytest.raises(CodeRefused, match="bad signature"):
        unpack(blob.replace(b".", b"!", 1), b"s1")
    with pytest.raises(CodeRefused, match="no AUTOFLOW_SECRET"):
        unpack(blob, None)
    with pytest.raises(af.WorkflowError, match="needs AUTOFLOW_SECRET"):
        pack({cube.key: cube}, None)


def _worker(redis_url: str, namespace: str, *extra: str, secret: str | None = SECRET) -> subprocess.Popen[bytes]:
    env = clean_env(AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=namespace)
    if secret:
        env["AUTOFLOW_SECRET"] = secret
    return subprocess.Popen(
        [sys.executable, "-m", "autoflow.cli", "worker", "--workers", "1", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _client(redis_url: str, settings: af.Settings, secret: str | None = SECRET) -> af.Client:
    tuned = settings.model_copy(update={"secret": SecretStr(secret) if secret else None})
    return af.Client(redis_url, settings=tuned, ship_code=True)


def test_a_worker_with_accept_code_runs_notebook_nodes(
    redis_url: str, settings: af.Settings, stop: list[subprocess.Popen[bytes]]
) -> None:
    stop.append(_worker(redis_url, settings.namespace, "--accept-code"))
    client = _client(redis_url, settings)
    assert client.execute(shipped, x=3).result(timeout=30) == 27
    client.close()


def test_a_worker_without_accept_code_refuses_shipped_code(
    redis_url: str, settings: af.Settings, stop: list[subprocess.Popen[bytes]]
) -> None:
    stop.append(_worker(redis_url, settings.namespace, "tests.resources.dags"))
    client = _client(redis_url, settings)
    with pytest.raises(af.RunFailed, match="does not accept code"):
        client.execute(shipped, x=3).result(timeout=30)
    client.close()


def test_a_worker_with_another_secret_refuses_shipped_code(
    redis_url: str, settings: af.Settings, stop: list[subprocess.Popen[bytes]]
) -> None:
    stop.append(_worker(redis_url, settings.namespace, "--accept-code", secret="another secret"))
    # Queue messages are signed too, so give the client the worker's secret for the queue
    # but ship code signed with a different one.
    client = _client(redis_url, settings, secret="another secret")
    blob = pack({cube.key: cube}, SECRET.encode())
    client.backend.store.put_blob(blob_key(code_hash(blob)), blob)
    client._ship = lambda wf: code_hash(blob)  # type: ignore[method-assign]
    with pytest.raises(af.RunFailed, match="bad signature"):
        client.execute(shipped, x=3).result(timeout=30)
    client.close()


def _power_workflow(exponent: int) -> af.Workflow:
    """What re-running a notebook cell does: the same node name and workflow, a new body."""

    def power_fn(x: int) -> int:
        return int(x**exponent)

    power = af.node(as_main(power_fn))

    @af.workflow(name="edited_in_a_cell")
    def edited(x: int = 2):
        return power(x)

    return edited


def test_an_edited_node_body_runs_the_new_code(
    redis_url: str, settings: af.Settings, stop: list[subprocess.Popen[bytes]]
) -> None:
    stop.append(_worker(redis_url, settings.namespace, "--accept-code"))
    client = _client(redis_url, settings)
    first = _power_workflow(3)
    assert client.execute(first, x=2).result(timeout=30) == 8
    second = _power_workflow(2)
    assert second.digest == first.digest  # the definition does not see function bodies...
    assert client.execute(second, x=2).result(timeout=30) == 4  # ...the shipped code does
    client.close()


def test_two_users_with_the_same_definition_run_their_own_code(
    redis_url: str, settings: af.Settings, stop: list[subprocess.Popen[bytes]]
) -> None:
    stop.append(_worker(redis_url, settings.namespace, "--accept-code"))
    alice, bob = _client(redis_url, settings), _client(redis_url, settings)
    cubed = alice.execute(_power_workflow(3), x=3)
    squared = bob.execute(_power_workflow(2), x=3)
    assert (cubed.result(timeout=30), squared.result(timeout=30)) == (27, 9)
    assert alice.status(cubed.id).definition_hash == bob.status(squared.id).definition_hash
    alice.close()
    bob.close()


def test_ship_code_without_a_secret_is_refused_before_anything_is_queued(redis_url: str, settings: af.Settings) -> None:
    client = _client(redis_url, settings, secret=None)
    with pytest.raises(af.WorkflowError, match="needs AUTOFLOW_SECRET"):
        client.execute(shipped, x=1)
    assert client.runs() == []
    client.close()


def test_accept_code_without_a_secret_is_a_clear_error(redis_url: str, settings: af.Settings) -> None:
    proc = _worker(redis_url, settings.namespace, "--accept-code", secret=None)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.returncode == 2
