"""``client.schedules``: create/list/get/update/delete, trigger now, backfill, preview,
decorator schedules, bad input; and an embedded client firing a schedule for real."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import autoflow as af
from autoflow.triggers import MAX_BACKFILL, Schedules, TriggerService
from tests.conftest import clean_env
from tests.triggers import flows
from tests.triggers.conftest import wait_for

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc).timestamp()
ROOT = Path(__file__).resolve().parent.parent.parent


def sched(client: af.Client, t: float = T0 - 10) -> Schedules:
    return Schedules(client.backend.store, client, client.registry, clock=lambda: t)


def test_create_get_list_update_delete(idle_client: af.Client) -> None:
    s = sched(idle_client)
    a = s.create(flows.tick, cron="0 9 * * MON", timezone="America/Sao_Paulo", id="weekly", organization_id="o1")
    b = s.create("trg_tick", interval="15m", inputs={"slot": "x"}, priority=3)
    assert a.id == "weekly" and a.source == "api" and a.version == 1
    assert a.next_slot is not None and a.next_slot.astimezone(ZoneInfo("America/Sao_Paulo")).isoformat() == (
        "2026-03-02T09:00:00-03:00"
    )
    assert (
        b.interval == 900.0 and b.next_slot is not None and b.next_slot.timestamp() == T0 + 900 - 10 - (T0 - 10) % 900
    )
    assert [x.id for x in s.list()] == sorted([a.id, b.id])
    assert [x.id for x in s.list(organization_id="o1")] == ["weekly"]
    assert s.get("weekly") == a
    changed = s.update("weekly", overlap="allow_all", note="moved")
    assert (changed.overlap, changed.note, changed.next_slot) == (af.OverlapPolicy.ALLOW_ALL, "moved", a.next_slot)
    moved = s.update("weekly", cron="0 10 * * MON")
    assert moved.next_slot is not None and moved.next_slot.timestamp() == a.next_slot.timestamp() + 3600
    to_interval = s.update("weekly", interval=3600)
    assert (to_interval.cron, to_interval.interval) == (None, 3600.0)
    s.delete("weekly")
    with pytest.raises(af.NotFoundError, match="no schedule 'weekly'"):
        s.get("weekly")
    with pytest.raises(af.NotFoundError):
        s.delete("weekly")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workflow": "nope", "cron": "* * * * *"}, af.NotFoundError, "no workflow named 'nope'"),
        ({"cron": "61 * * * *"}, af.InputError, "cron '61 \\* \\* \\* \\*' is not a valid"),
        ({"cron": "* * * * *", "timezone": "Nowhere/Land"}, af.InputError, "timezone 'Nowhere/Land'"),
        ({"cron": "* * * * *", "overlap": "queue_all"}, af.InputError, "overlap is one of"),
        ({"cron": "* * * * *", "catchup": "some"}, af.InputError, "catchup one of"),
        ({"cron": "* * * * *", "slot_input": "day"}, af.InputError, "slot_input 'day' is not an input"),
        ({"cron": "* * * * *", "inputs": {"slot": 5}}, af.InputError, "slot"),
        ({"cron": "* * * * *", "inputs": {"unknown": 1}}, af.InputError, "unknown"),
        ({"cron": "* * * * *", "inputs": {"slot": object()}}, af.InputError, "inputs\\['slot'\\]"),
        ({"cron": "* * * * *", "id": "bad id!"}, af.InputError, "schedule id must match"),
        ({"cron": "* * * * *", "priority": "high"}, af.InputError, "priority must be an int"),
        ({"cron": "* * * * *", "catchup_window": -5}, af.InputError, "catchup_window must be"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    idle_client: af.Client, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    s = sched(idle_client)
    kwargs = dict(kwargs)  # the parameters are shared by both stores' runs
    workflow = kwargs.pop("workflow", flows.tick)
    with pytest.raises(error, match=message):
        s.create(workflow, **kwargs)  # type: ignore[arg-type]
    assert s.list() == []  # nothing half-written


def test_an_id_cannot_be_taken_twice(idle_client: af.Client) -> None:
    s = sched(idle_client)
    s.create(flows.tick, cron="* * * * *", id="dup")
    with pytest.raises(af.InputError, match="schedule id 'dup' is taken"):
        s.create(flows.tick, cron="0 * * * *", id="dup")
    with pytest.raises(af.InputError, match="cannot update schedule field"):
        s.update("dup", colour="red")


def test_trigger_now_has_its_own_key(idle_client: af.Client) -> None:
    s = sched(idle_client)
    info = s.create(flows.tick, cron="0 0 1 1 *", slot_input="slot")
    first = s.trigger(info.id)
    again = s.trigger(info.id, key="deploy-42")
    same = s.trigger(info.id, key="deploy-42")
    assert first.id != again.id and again.id == same.id
    run = idle_client.status(first.id)
    assert run.trigger == "schedule" and run.trigger_data["reason"] == "manual"
    assert s.get(info.id).fired == 3 and s.get(info.id).last_run_id is None
    with pytest.raises(af.InputError, match="trigger key"):
        s.trigger(info.id, key="no spaces please")


def test_backfill_a_range(idle_client: af.Client) -> None:
    s = sched(idle_client)
    info = s.create(flows.tick, cron="0 9 * * *", timezone="Europe/Paris", slot_input="slot")
    ids = s.backfill(info.id, datetime(2026, 1, 1, 9), datetime(2026, 1, 5, 9))  # naive: Paris time
    assert len(ids) == 5
    runs = [idle_client.status(i) for i in ids]
    assert [r.inputs["slot"] for r in runs] == [f"2026-01-0{d}T09:00:00+01:00" for d in range(1, 6)]
    assert {r.trigger_data["reason"] for r in runs} == {"backfill"}
    assert s.backfill(info.id, datetime(2026, 1, 3, 9), datetime(2026, 1, 3, 9)) == [ids[2]]  # same slot, same run
    assert s.get(info.id).fired == 6


def test_backfill_above_the_bound_starts_nothing(idle_client: af.Client) -> None:
    s = sched(idle_client)
    info = s.create(flows.tick, cron="* * * * *")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(af.InputError, match=f"covers more than {MAX_BACKFILL} slots"):
        s.backfill(info.id, start, start + timedelta(days=1))
    with pytest.raises(af.InputError, match="covers more than 10 slots"):
        s.backfill(info.id, start, start + timedelta(hours=1), limit=10)
    with pytest.raises(af.InputError, match="before its start"):
        s.backfill(info.id, start, start - timedelta(hours=1))
    assert idle_client.runs(limit=10) == []


def test_preview(idle_client: af.Client) -> None:
    s = sched(idle_client, datetime(2025, 11, 1, 12, tzinfo=timezone.utc).timestamp())
    info = s.create(flows.tick, cron="30 1 * * *", timezone="America/New_York")
    got = [d.isoformat() for d in s.preview(info.id, 3)]
    assert got == ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00", "2025-11-04T01:30:00-05:00"]
    with pytest.raises(af.InputError, match="n must be"):
        s.preview(info.id, 0)


def test_decorator_schedules_sync_by_name(idle_client: af.Client) -> None:
    registry = af.Registry()
    registry.add_workflow(flows.nightly)
    registry.add_workflow(flows.tick)  # no schedule: not synced
    s = Schedules(idle_client.backend.store, idle_client, registry, clock=lambda: T0)
    [made] = s.sync()
    assert (made.id, made.source, made.cron, made.timezone) == (
        "trg_nightly",
        "decorator",
        "30 1 * * *",
        "America/New_York",
    )
    paused = s.pause("trg_nightly")
    [again] = s.sync()  # kept as it is: paused, same version
    assert again.paused and again.version == paused.version
    s.delete("trg_nightly")
    s.create(flows.nightly, cron="* * * * *", id="trg_nightly")
    with pytest.raises(af.InputError, match="were created by hand"):
        s.sync()


def test_workflow_timezone_is_checked_and_kept_in_the_definition() -> None:
    assert flows.nightly.timezone == "America/New_York"
    assert flows.nightly.to_dict()["timezone"] == "America/New_York"
    assert af.Workflow.from_dict(flows.nightly.to_dict()).timezone == "America/New_York"
    with pytest.raises(af.WorkflowError, match="timezone 'Moon/Base' is not a known"):

        @af.workflow(name="trg_badtz", schedule="* * * * *", timezone="Moon/Base", registry=af.Registry())
        def bad() -> None:
            flows.stamp("x")

    with pytest.raises(af.WorkflowError, match="needs a schedule"):

        @af.workflow(name="trg_notz", timezone="UTC", registry=af.Registry())
        def lonely() -> None:
            flows.stamp("x")


def test_an_embedded_client_fires_its_schedules(settings: af.Settings) -> None:
    """The real thing: an embedded SQLite client with its scheduler on, a schedule every
    second, real time. Each slot runs once and completes."""
    with af.Client(settings=settings, scheduler=True) as client:
        info = client.schedules.create(flows.tick, cron="* * * * * *", slot_input="slot", overlap="allow_all")
        client.start()
        wait_for(lambda: len([r for r in client.runs(workflow="trg_tick") if r.finished]) >= 3, timeout=15)
        runs = client.runs(workflow="trg_tick")
        slots = [r.trigger_data["slot"] for r in runs]
        assert len(slots) == len(set(slots))
        done = [r for r in runs if r.finished]
        assert all(client.result(r.id) == r.inputs["slot"] for r in done)
        assert {r.trigger_data["reason"] for r in runs} == {"schedule"}  # on time: none was a late catch-up
        # The ticker records a firing after it started the run, at the end of its pass: a
        # fast run can finish before that write (seen once under CI load: 2 after 3 runs).
        wait_for(lambda: client.schedules.get(info.id).fired >= 3, timeout=5)


def test_the_scheduler_is_off_by_default_on_redis_and_with_the_setting(redis_url: str, settings: af.Settings) -> None:
    with af.Client(redis_url, settings=settings) as client:
        assert client.scheduler is False
    off = settings.model_copy(update={"scheduler": False})
    with af.Client(settings=off) as client:
        assert client.scheduler is False
    with af.Client(settings=settings.model_copy(update={"scheduler": True})) as client:
        assert client.scheduler is True


def test_the_service_syncs_workflows_declared_later(idle_client: af.Client) -> None:
    """A notebook defines a scheduled workflow after its client started: the service
    syncs it at its next round."""
    registry = af.Registry()
    service = TriggerService(idle_client.backend.store, idle_client, registry, interval=0.05, resync=0.05)
    service.start()
    try:
        assert service.schedules.list() == []
        registry.add_workflow(flows.nightly)
        wait_for(lambda: [s.id for s in service.schedules.list()] == ["trg_nightly"])
    finally:
        service.stop()
    assert not service.ticker.holding


def test_cli_lists_schedules(sqlite_idle_client: af.Client, tmp_path: Path) -> None:
    idle_client = sqlite_idle_client
    sched(idle_client).create(flows.tick, cron="0 9 * * MON", timezone="America/Sao_Paulo", id="weekly")
    env = clean_env(AUTOFLOW_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "autoflow.cli", "schedules", "--url", idle_client.url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "weekly" in done.stdout and "0 9 * * MON" in done.stdout and "America/Sao_Paulo" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "autoflow.cli", "scheduler", "no_such_module_xyz", "--url", idle_client.url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cannot import module 'no_such_module_xyz'" in bad.stderr
