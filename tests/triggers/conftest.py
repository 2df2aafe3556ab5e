"""Fixtures of the trigger tests: clients without workers on each store, a PostgreSQL
database of our own for the session, fresh tables.

PostgreSQL is the machine's server at 127.0.0.1:5432 (user postgres, trust auth). Each
session (each xdist worker) creates a database with a unique name and drops it at the end.
Without a server the PostgreSQL tests skip locally, but fail under ``CI=true``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import autoflow as af

PG_ADMIN = os.environ.get("AUTOFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _need_postgres(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll ``condition`` until truthy; fail with its last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still {value!r} after {timeout}s")
        time.sleep(step)


@pytest.fixture(params=["sqlite", "redis"])
def idle_client(request: pytest.FixtureRequest, settings: af.Settings, tmp_path: object) -> Iterator[af.Client]:
    """A client whose runs are stored but never executed (no workers): they stay
    pending, i.e. "still going" for the overlap policies."""
    if request.param == "sqlite":
        made = af.Client(f"sqlite:///{settings.home / 'a.db'}", settings=settings, workers=0, scheduler=False)
    else:
        made = af.Client(request.getfixturevalue("redis_url"), settings=settings, workers=0, scheduler=False)
    yield made
    made.close()


@pytest.fixture
def sqlite_idle_client(settings: af.Settings) -> Iterator[af.Client]:
    """An idle client (as above) on SQLite only: for tests about the watched database."""
    made = af.Client(f"sqlite:///{settings.home / 'a.db'}", settings=settings, workers=0, scheduler=False)
    yield made
    made.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of our own for this session (dropped at the end)."""
    try:
        import psycopg
    except ImportError:
        _need_postgres("psycopg is not installed (pip install 'autoflow[postgres]')")
    name = f"autoflow_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _need_postgres(f"no PostgreSQL at {PG_ADMIN}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_table(pg_url: str) -> str:
    """A fresh table ``(id serial primary key, name text, qty int, note text)``."""
    import psycopg

    table = f"orders_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text, qty int, note text)")
    return table
