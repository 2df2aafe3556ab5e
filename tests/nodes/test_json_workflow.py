"""The seed-style workflow of examples/order_intake.json, in JSON only, on SQLite and Redis:
webhook -> validation -> condition_if -> http_request / send_email -> database_save -> logger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from tests.nodes.servers import HTTPServer, Response, SMTPRecorder

DEFINITION = Path(__file__).resolve().parents[2] / "examples" / "order_intake.json"


@pytest.fixture(params=["sqlite", "redis"])
def backend_client(request: pytest.FixtureRequest, settings: af.Settings) -> Iterator[af.Client]:
    if request.param == "sqlite":
        client = af.Client(settings=settings)
    else:
        client = af.Client(request.getfixturevalue("redis_url"), settings=settings, workers=4)
    yield client
    client.close()


@pytest.fixture
def shop(tmp_path: Path, credential: Any) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, email TEXT, total REAL, route TEXT, message_id TEXT)"
        )
    credential("shop_db", f"sqlite:///{path}")
    return path


def _webhook(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/orders",
        "headers": {"content-type": "application/json"},
        "query": {},
        "body": order,
    }


def test_the_json_workflow_runs_both_branches(
    backend_client: af.Client, shop: Path, http_server: HTTPServer, smtp: SMTPRecorder
) -> None:
    http_server.route("POST", "/orders", lambda r: Response(201, {"ok": True}))
    wf = af.Workflow.from_dict(json.loads(DEFINITION.read_text()))
    svg = wf.to_svg()
    for node_id in ("webhook", "order", "is_big", "notify_crm", "thank_you", "save", "log"):
        assert node_id in svg
    inputs = {"crm_url": http_server.url(""), "smtp_port": smtp.port}

    big = backend_client.execute(
        wf, inputs, trigger="webhook", trigger_data=_webhook({"id": "A-1", "email": "a@x.test", "total": 250})
    )
    small = backend_client.execute(
        wf, inputs, trigger="webhook", trigger_data=_webhook({"id": "B-2", "email": "b@x.test", "total": 20})
    )
    assert big.result(timeout=60)["message"] == "order A-1 saved (upsert)"
    assert small.result(timeout=60)["message"] == "order B-2 saved (upsert)"

    big_info, small_info = big.status(), small.status()
    assert big_info.nodes["thank_you"].status is af.NodeStatus.SKIPPED
    assert small_info.nodes["notify_crm"].status is af.NodeStatus.SKIPPED
    (crm_call,) = http_server.requests
    assert (
        crm_call.json() == {"order": "A-1", "total": 250}
        and crm_call.headers["idempotency-key"] == f"{big.id}:notify_crm"
    )
    (mail,) = smtp.messages
    assert mail["rcpts"] == ["b@x.test"] and mail["subject"] == "Order B-2 received"
    with sqlite3.connect(shop) as db:
        rows = db.execute("SELECT order_id, route, message_id FROM orders ORDER BY order_id").fetchall()
    assert rows == [("A-1", "crm", None), ("B-2", "email", mail["message_id"])]
    drawn = big.to_svg()
    assert "notify_crm" in drawn
    assert any("order A-1 saved" in entry.message for entry in big.logs())


def test_an_invalid_order_stops_at_validation(backend_client: af.Client, shop: Path) -> None:
    wf = af.Workflow.from_dict(json.loads(DEFINITION.read_text()))
    run = backend_client.execute(
        wf, {"crm_url": "http://127.0.0.1:9"}, trigger="webhook", trigger_data=_webhook({"id": "x", "total": -1})
    )
    info = run.wait(timeout=60)
    assert info.status is af.RunStatus.FAILED and info.error is not None and info.error.node_id == "order"
    assert "/email" in info.error.message or "'email' is a required property" in info.error.message
    assert all(info.nodes[n].status is af.NodeStatus.SKIPPED for n in ("is_big", "save", "log"))
    with sqlite3.connect(shop) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_the_example_script_runs() -> None:
    import os
    import subprocess
    import sys

    script = DEFINITION.parent / "json_workflow.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFLOW_CREDENTIAL", "AUTOFLOW_REDIS"))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "order A-100 saved (upsert)" in done.stdout and "order B-7 saved (upsert)" in done.stdout
    assert "row ('B-7', 'bo@example.com', 19.9, 'email', '<" in done.stdout


def test_the_json_workflow_is_saved_executed_by_id_and_drawn(
    backend_client: af.Client, shop: Path, http_server: HTTPServer, smtp: SMTPRecorder
) -> None:
    """The whole seed path: the JSON definition saved by id (as POST /api/workflows does),
    executed by id (as POST /api/workflows/{id}/execute does), drawn from the run."""
    http_server.route("POST", "/orders", lambda r: Response(201, {"ok": True}))
    stored = backend_client.save_workflow(json.loads(DEFINITION.read_text()), workflow_id="order_intake")
    assert stored.version == 1
    inputs = {"crm_url": http_server.url(""), "smtp_port": smtp.port}
    run = backend_client.execute(
        "order_intake", inputs, trigger="webhook", trigger_data=_webhook({"id": "C-3", "email": "c@x.test", "total": 9})
    )
    assert run.result(timeout=60)["message"] == "order C-3 saved (upsert)"
    info = run.status()
    assert (info.workflow_id, info.workflow_version) == ("order_intake", 1)
    svg = run.to_svg()  # drawn from the stored definition the run ran, states coloured
    for node_id in ("webhook", "order", "is_big", "notify_crm", "thank_you", "save", "log"):
        assert node_id in svg
    with sqlite3.connect(shop) as db:
        assert db.execute("SELECT route FROM orders WHERE order_id = 'C-3'").fetchone() == ("email",)
