"""Schedules over HTTP, on a workflow stored by id: create, fire, pause, trigger, backfill,
preview, tenants, and the dashboard's schedules page."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.server.conftest import Api
from tests.server.test_workflows_api import _definition


def _store_workflow(api: Api, workflow_id: str = "nightly") -> None:
    made = api.http.post(
        "/api/workflows", json={"id": workflow_id, "definition": _definition()}, headers=api.auth(scopes="admin")
    )
    assert made.status_code == 201, made.text


def test_a_schedule_of_a_stored_workflow_fires_and_is_controlled_over_http(api: Api) -> None:
    _store_workflow(api)
    admin, reader = api.auth(scopes="admin"), api.auth(scopes="read")
    body: dict[str, Any] = {"id": "every_second", "workflow": "nightly", "interval": 1, "inputs": {"a": 2}}
    made = api.http.post("/api/schedules", json=body, headers=admin)
    assert made.status_code == 201, made.text
    assert made.headers["location"] == "/api/schedules/every_second" and made.json()["organization_id"] == "acme"

    # The API's client runs no ticker here (AUTOFLOW_SCHEDULER is off in tests): tick by hand.
    ticker = api.client.schedules.ticker()
    deadline = time.monotonic() + 10
    while not api.http.get("/api/schedules/every_second", headers=reader).json()["fired"]:
        ticker.tick()
        assert time.monotonic() < deadline, "the schedule never fired"
        time.sleep(0.2)
    info = api.http.get("/api/schedules/every_second", headers=reader).json()
    run = api.wait_status(info["last_run_id"], reader, lambda b: b["status"] == "completed")
    assert run["output"] == 6 and run["trigger"] == "schedule" and run["workflow_id"] == "nightly"

    assert api.http.post("/api/schedules/every_second/pause", headers=admin).json()["paused"] is True
    assert api.http.post("/api/schedules/every_second/resume", headers=admin).json()["paused"] is False
    now = api.http.post("/api/schedules/every_second/trigger", headers=api.auth())
    assert now.status_code == 202 and now.json()["executionId"]
    times = api.http.get("/api/schedules/every_second/preview", params={"n": 3}, headers=reader).json()["times"]
    assert len(times) == 3 and times == sorted(times)
    listed = api.http.get("/api/schedules", headers=reader).json()["schedules"]
    assert [s["id"] for s in listed] == ["every_second"]


def test_backfill_update_delete_and_scopes(api: Api) -> None:
    _store_workflow(api)
    admin = api.auth(scopes="admin")
    made = api.http.post(
        "/api/schedules", json={"id": "hourly", "workflow": "nightly", "cron": "0 * * * *"}, headers=admin
    )
    assert made.status_code == 201, made.text
    end = datetime(2026, 1, 1, 5, 30, tzinfo=timezone.utc)
    window = {"start": (end - timedelta(hours=3)).isoformat(), "end": end.isoformat()}
    filled = api.http.post("/api/schedules/hourly/backfill", json=window, headers=admin)
    assert filled.status_code == 200 and len(filled.json()["executionIds"]) == 3
    again = api.http.post("/api/schedules/hourly/backfill", json=window, headers=admin)
    assert again.json()["executionIds"] == filled.json()["executionIds"]  # one run per slot, ever
    too_many = api.http.post("/api/schedules/hourly/backfill", json={**window, "limit": 2}, headers=admin)
    assert too_many.status_code == 422 and "slots" in too_many.json()["detail"]

    changed = api.http.patch(
        "/api/schedules/hourly", json={"cron": "30 9 * * MON", "timezone": "America/Sao_Paulo"}, headers=admin
    )
    assert changed.status_code == 200 and changed.json()["timezone"] == "America/Sao_Paulo"
    bad = api.http.patch("/api/schedules/hourly", json={"cron": "every tuesday"}, headers=admin)
    assert bad.status_code == 422 and "cron" in bad.json()["detail"]

    assert (
        api.http.post("/api/schedules", json={"workflow": "nightly", "interval": 5}, headers=api.auth()).status_code
        == 403
    )
    assert api.http.post("/api/schedules/hourly/pause", headers=api.auth(scopes="read")).status_code == 403
    other = api.auth("beta", "admin")
    assert api.http.get("/api/schedules/hourly", headers=other).status_code == 404  # another tenant's
    assert api.http.delete("/api/schedules/hourly", headers=other).status_code == 404
    assert api.http.delete("/api/schedules/hourly", headers=admin).status_code == 204
    assert api.http.get("/api/schedules/hourly", headers=admin).status_code == 404


def test_bad_schedules_are_4xx_naming_the_field(api: Api) -> None:
    _store_workflow(api)
    admin = api.auth(scopes="admin")
    for body, field in (
        ({"workflow": "nightly"}, "cron"),
        ({"workflow": "nightly", "cron": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"workflow": "no_such_flow", "cron": "0 * * * *"}, "no_such_flow"),
        ({"workflow": "nightly", "cron": "0 * * * *", "inputs": {"zz": 1}}, "zz"),
        ({"workflow": "nightly", "interval": -1}, "interval"),
    ):
        got = api.http.post("/api/schedules", json=body, headers=admin)
        assert 400 <= got.status_code < 500, (body, got.text)
        assert field in got.text, (field, got.text)
