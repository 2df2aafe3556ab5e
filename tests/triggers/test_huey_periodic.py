"""The Huey periodic-task helper on a real (in-memory) Huey with a driven clock: one run
per slot, however many copies run. Two real consumers on Redis: test_replicas.py."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import huey as huey_api
import pytest

import autoflow as af
from autoflow.triggers import huey_periodic
from autoflow.triggers import periodic as module
from tests.triggers import flows

T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    fake = SimpleNamespace(now=T0 + 0.4)
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: fake.now))
    return fake


def test_copies_of_a_slot_start_one_run(idle_client: af.Client, clock: SimpleNamespace) -> None:
    huey = huey_api.MemoryHuey("copies", immediate=False)
    made: list[int] = []

    def factory() -> af.Client:
        made.append(1)
        return idle_client

    task = huey_periodic(huey, factory, flows.tick, cron="* * * * * *", slot_input="slot", name="every_second")
    assert made == []  # nothing connects when the task is registered
    first = task.call_local()
    clock.now += 0.5  # another consumer's copy runs a little later, same slot
    assert task.call_local() == first
    clock.now += 1.0  # the next slot
    second = task.call_local()
    assert second != first and made == [1]
    runs = sorted(idle_client.runs(workflow="trg_tick"), key=lambda r: r.created_at)
    assert [r.id for r in runs] == [first, second]
    assert [r.inputs["slot"] for r in runs] == ["2026-03-02T08:00:00+00:00", "2026-03-02T08:00:01+00:00"]
    assert {r.trigger for r in runs} == {"schedule"} and runs[0].trigger_data["huey_task"] == "every_second"


def test_each_process_enqueues_a_slot_once(idle_client: af.Client, clock: SimpleNamespace) -> None:
    huey = huey_api.MemoryHuey("enqueue", immediate=False)
    every = huey_periodic(huey, idle_client, flows.tick, cron="* * * * *", name="every_minute")
    check = every.task_class().validate_datetime
    assert check(None) is True  # Huey's own timestamp is not used: the clock decides
    assert check(None) is False  # this process enqueued this slot already
    clock.now += 60
    assert check(None) is True
    yearly = huey_periodic(huey, idle_client, flows.tick, cron="0 0 1 1 *", name="yearly")
    assert yearly.task_class().validate_datetime(None) is False  # 1 January is past the grace
    assert yearly.call_local() is None  # and a task running that late does nothing


def test_bad_cron_is_refused_at_registration(idle_client: af.Client) -> None:
    huey = huey_api.MemoryHuey("bad", immediate=False)
    with pytest.raises(af.InputError, match="cron"):
        huey_periodic(huey, idle_client, flows.tick, cron="every day")
