"""Shared fixtures: a private redis-server, stores of both kinds, clients of every backend.

Redis tests use a redis-server started here on a free loopback port (never a database
we did not create). Without the binary they skip locally, but fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

import autoflow as af
from autoflow.store.redis import RedisStore
from autoflow.store.sqlite import SQLiteStore

IMPLEMENTATIONS = ["sqlite", "redis", "redis-scripts"]  # redis: transitions as functions (Redis 7)
BACKENDS = ["memory", "sqlite", "redis"]


ROOT = Path(__file__).resolve().parent.parent


def clean_env(**values: str) -> dict[str, str]:
    """The environment of an ``autoflow`` subprocess: none of the developer's
    ``AUTOFLOW_*``/``REDIS_*`` settings, this checkout importable, then ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFLOW_", "REDIS_"))}
    env.update(PYTHONPATH=str(ROOT), **values)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(reason: str, what: str = "Redis") -> NoReturn:
    """Skip a test that lacks a part (``what``) here, but fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the {what} tests: {reason}")
    pytest.skip(reason)


def chromium() -> str:
    """Debian's chromium (or ``AUTOFLOW_CHROMIUM``), for the browser tests."""
    for candidate in (os.environ.get("AUTOFLOW_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    need("chromium is not installed (apt-get install -y chromium)", "browser")


def start_redis(workdir: Path, *extra: str) -> tuple[str, Callable[[], None]]:
    """Start a private redis-server on a free loopback port: its URL and a stop function."""
    binary = shutil.which("redis-server")
    if binary is None:
        need("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(workdir / "redis.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (perhaps with a password)
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            need(f"redis-server did not start on port {port}")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return f"redis://127.0.0.1:{port}/0", stop


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test session (one per xdist worker)."""
    url, stop = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's configuration or write to ~/.autoflow."""
    for name in ("AUTOFLOW_REDIS_URL", "REDIS_HOST", "AUTOFLOW_SECRET", "AUTOFLOW_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOFLOW_HOME", str(tmp_path / "home"))
    # Embedded clients fire no schedules here (tests/triggers turns it on where it tests it).
    monkeypatch.setenv("AUTOFLOW_SCHEDULER", "false")


@pytest.fixture
def settings(tmp_path: Path) -> af.Settings:
    """Fast recovery settings and a namespace of our own on the shared test Redis."""
    return af.Settings(
        home=tmp_path / "home",
        namespace=f"t{uuid.uuid4().hex[:12]}",
        lease_seconds=2.0,
        requeue_seconds=2.0,
        max_stalls=3,
        node_concurrency=4,
        workflow_concurrency=50,
    )


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest, settings: af.Settings) -> Iterator[SQLiteStore | RedisStore]:
    if request.param == "sqlite":
        made: SQLiteStore | RedisStore = SQLiteStore(":memory:")
    else:
        made = RedisStore.from_url(request.getfixturevalue("redis_url"), namespace=settings.namespace)
        if request.param == "redis-scripts":  # as on a server without functions (Redis 6)
            made.use_scripts()
    yield made
    made.close()


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, settings: af.Settings) -> Iterator[af.Client]:
    """A client of each backend, running its nodes in this process."""
    if request.param == "memory":
        made = af.Client(immediate=True, settings=settings)
    elif request.param == "sqlite":
        made = af.Client(settings=settings)
    else:
        made = af.Client(request.getfixturevalue("redis_url"), settings=settings, workers=4)
    yield made
    made.close()
