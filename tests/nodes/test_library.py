"""The library's surface: the seed's type names, public names, cheap imports, install hints."""

from __future__ import annotations

import subprocess
import sys

import pytest

import autoflow as af
import autoflow.nodes as nodes
from autoflow.define.registry import builtin_registry
from autoflow.nodes.base import MissingExtra, optional_import

SEED_TYPES = {
    "manual_trigger", "webhook_trigger", "schedule_trigger", "database_trigger",
    "http_request", "send_email", "database_save", "whatsapp_send", "payment_process",
    "condition_if", "switch", "validation", "error_handler",
    "data_transform", "clone", "logger", "autoflow.delay",
}  # fmt: skip


def test_every_seed_type_is_a_builtin_node() -> None:
    assert set(builtin_registry().nodes) >= SEED_TYPES
    for name in SEED_TYPES - {"autoflow.delay"}:
        assert getattr(nodes, name).key == name


def test_public_names() -> None:
    assert nodes.__all__ == sorted(nodes.__all__)
    assert all(hasattr(nodes, name) for name in nodes.__all__)
    assert af.nodes is nodes


def test_importing_autoflow_stays_cheap() -> None:
    # (psycopg is left out: huey.storage imports it whenever it is installed.)
    heavy = ("sqlalchemy", "jsonschema", "pymysql", "httpx")
    code = f"import sys, autoflow; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_missing_extra_names_it() -> None:
    with pytest.raises(MissingExtra, match=r"pip install 'autoflow\[database\]'"):
        optional_import("no_such_module_xyz", "database", "database_save")


def test_a_worker_resolves_library_types_without_user_modules(run_client: af.Client) -> None:
    # The definition travels as JSON; the executor finds "clone" in the built-in registry.
    wf = af.Workflow.from_dict({"name": "lib_only", "nodes": [{"id": "c", "type": "clone", "config": {"data": [1, 2]}}],
                                "edges": [], "output": "c"})  # fmt: skip
    assert wf.node_modules == {"autoflow.nodes.utilities"}
    assert run_client.execute(wf).result(timeout=30) == [1, 2]


def test_credentials_from_a_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "secrets.json"
    path.write_text('{"crm": {"token": "file-canary-1"}, "plain": "xyz"}')
    monkeypatch.setenv("AUTOFLOW_CREDENTIALS_FILE", str(path))
    ctx = af.Context("r", "n")
    assert ctx.credential("crm") == {"token": "file-canary-1"} and ctx.credential("plain") == "xyz"
    assert ctx.scrub("token file-canary-1 leaked") == "token *** leaked"
    monkeypatch.setenv("AUTOFLOW_CREDENTIAL_CRM", "env-wins")
    assert ctx.credential("crm") == "env-wins"
    with pytest.raises(nodes.CredentialError, match="'ghost'"):
        ctx.credential("ghost")
