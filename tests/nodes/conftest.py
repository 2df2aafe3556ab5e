"""Fixtures of the node library's tests: loopback servers and databases of our own.

PostgreSQL (127.0.0.1:5432, user postgres) and MariaDB (127.0.0.1:3306, user root) get a
database created for this session (one per xdist worker) and dropped afterwards. Without
the service the tests skip locally but fail under ``CI=true``.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from tests.nodes.servers import FakePayments, FakeWhatsApp, HTTPServer, SMTPRecorder


def need_service(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the node library's database tests: {reason}")
    pytest.skip(reason)


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    server = HTTPServer()
    yield server
    server.close()


@pytest.fixture
def whatsapp() -> Iterator[tuple[FakeWhatsApp, HTTPServer]]:
    api = FakeWhatsApp()
    server = HTTPServer()
    server.fallback = api
    yield api, server
    server.close()


@pytest.fixture
def payments() -> Iterator[tuple[FakePayments, HTTPServer]]:
    api = FakePayments()
    server = HTTPServer()
    server.fallback = api
    yield api, server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SMTPRecorder]:
    server = SMTPRecorder()
    yield server
    server.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def smtp_tls(certificate: tuple[Path, Path]) -> Iterator[SMTPRecorder]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    server = SMTPRecorder(tls_context=context, auth=("bot", "mail-canary-pw-0451"))
    yield server
    server.close()


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Any], None]:
    """``credential("name", value)`` configures a credential for this test (environment)."""

    def put(name: str, value: Any) -> None:
        text = value if isinstance(value, str) else __import__("json").dumps(value)
        monkeypatch.setenv("AUTOFLOW_CREDENTIAL_" + name.upper().replace("-", "_").replace(".", "_"), text)

    return put


@pytest.fixture
def run_client(settings: af.Settings) -> Iterator[af.Client]:
    """An immediate-mode client: the production code path, synchronously."""
    client = af.Client(immediate=True, settings=settings)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        import psycopg
    except ImportError:
        need_service("psycopg is not installed")
    name = f"af_nodes_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        need_service(f"PostgreSQL is not answering on 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from autoflow.nodes import database

    for engine in list(database._engines.values()):
        engine.dispose()
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    try:
        import pymysql
    except ImportError:
        need_service("pymysql is not installed")
    name = f"af_nodes_{uuid.uuid4().hex[:12]}"
    try:
        admin = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3, autocommit=True
        )
    except pymysql.err.OperationalError as exc:
        need_service(f"MariaDB is not answering on 127.0.0.1:3306: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    from autoflow.nodes import database

    for engine in list(database._engines.values()):
        engine.dispose()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()
