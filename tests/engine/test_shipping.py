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
from autoflow import codec
from autoflow.engine.shipping import CodeRefused, pack, unpack

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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFLOW_", "REDIS_"))}
    env.update(AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=namespace, PYTHONPATH=str(ROOT))
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
    digest = shipped.digest
    client.backend.store.put_blob(f"code:{digest}", pack({cube.key: cube}, SECRET.encode()))
    client._stored.add(digest)
    client.backend.store.put_definition(digest, codec.dumps(shipped.to_dict()))
    with pytest.raises(af.RunFailed, match="bad signature"):
        client.execute(shipped, x=3).result(timeout=30)
    client.close()


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
