"""The ticker on SQLite and Redis with a driven clock: one run per slot, overlap and
catch-up policies, grace, jitter, DST nights, leases, concurrent edits.

Runs are stored by a client without workers, so they stay pending: "still going" for the
overlap policies until a test cancels them.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import autoflow as af
from autoflow.models import ScheduleInfo
from autoflow.triggers import Schedules, Ticker
from autoflow.triggers.base import write
from autoflow.triggers.spec import slot_key
from tests.triggers import flows

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc).timestamp()  # a Monday, 08:00 UTC
HOUR = 3600.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(client: af.Client, clock: Clock, **kwargs: Any) -> tuple[Schedules, Ticker, ScheduleInfo]:
    schedules = Schedules(client.backend.store, client, client.registry, clock=clock)
    info = schedules.create(flows.tick, **{"cron": "0 * * * *", "slot_input": "slot", **kwargs})
    return schedules, schedules.ticker(clock=clock), info


def runs(client: af.Client) -> list[af.RunInfo]:
    """The runs started, oldest first (ids of keyed runs do not sort by time)."""
    return sorted(client.runs(workflow="trg_tick", limit=10_000), key=lambda r: r.created_at)


def kinds(info: ScheduleInfo) -> list[str]:
    return [e.kind.value for e in info.events]


def test_one_run_per_slot_however_often_it_ticks(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock)
    assert info.next_slot is not None and info.next_slot.timestamp() == T0
    assert ticker.tick(T0 - 0.001) == 0
    assert ticker.tick(T0) == 1
    assert ticker.tick(T0) == 0
    assert ticker.tick(T0 + 5) == 0
    [run] = runs(idle_client)
    assert run.trigger == "schedule"
    assert run.trigger_data["slot"] == slot_key(T0) == "2026-03-02T08:00:00Z"
    assert run.inputs == {"slot": "2026-03-02T08:00:00+00:00"}
    info = schedules.get(info.id)
    assert (info.fired, info.last_run_id, info.last_slot) == (1, run.id, datetime.fromtimestamp(T0, timezone.utc))
    assert info.next_slot is not None and info.next_slot.timestamp() == T0 + HOUR
    assert kinds(info) == ["fired"]


def test_the_same_slot_started_again_is_the_same_run(idle_client: af.Client) -> None:
    """A restart in the middle of a pass (runs started, record not yet written) repeats
    the pass: the idempotency key gives the first run back."""
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock)
    ticker.tick(T0)
    first = runs(idle_client)[0].id
    # put the record back as it was before the pass: the next pass fires slot T0 again
    before = schedules.get(info.id).model_copy(
        update={"next_slot": info.next_slot, "fired": 0, "events": [], "active_runs": []}
    )
    assert write(schedules.records, "schedule", before, create=False, wake_at=T0) is not None
    assert ticker.tick(T0 + 1) == 1  # the pass believes it started a run...
    assert [r.id for r in runs(idle_client)] == [first]  # ...and it is the first one


def test_overlap_skip_records_the_skipped_slot(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock)
    ticker.tick(T0)
    ticker.tick(T0 + HOUR)  # the first run is still pending
    info = schedules.get(info.id)
    assert (info.fired, info.skipped) == (1, 1)
    assert kinds(info) == ["fired", "skipped"]
    assert "still going" in info.events[-1].message
    idle_client.cancel(runs(idle_client)[0].id)
    ticker.tick(T0 + 2 * HOUR)
    assert len(runs(idle_client)) == 2
    assert [r.trigger_data["slot"] for r in runs(idle_client)] == [slot_key(T0), slot_key(T0 + 2 * HOUR)]


def test_overlap_buffer_one(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, overlap="buffer_one")
    ticker.tick(T0)
    ticker.tick(T0 + HOUR)  # buffered
    ticker.tick(T0 + 2 * HOUR)  # a slot is buffered already: skipped
    info = schedules.get(info.id)
    assert kinds(info) == ["fired", "buffered", "skipped"]
    assert info.buffered_slot is not None and info.buffered_slot.timestamp() == T0 + HOUR
    assert ticker.tick(T0 + 2 * HOUR + 30) == 0  # still blocked
    idle_client.cancel(runs(idle_client)[0].id)
    assert ticker.tick(T0 + 2 * HOUR + 31) == 1  # the buffered slot starts once the blocker ended
    last = runs(idle_client)[-1]
    assert (last.trigger_data["slot"], last.trigger_data["reason"]) == (slot_key(T0 + HOUR), "buffered")
    assert schedules.get(info.id).buffered_slot is None


def test_overlap_allow_all(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, overlap="allow_all")
    for k in range(3):
        ticker.tick(T0 + k * HOUR)
    assert len(runs(idle_client)) == 3
    assert schedules.get(info.id).active_runs == []


def test_overlap_cancel_other(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, overlap="cancel_other")
    ticker.tick(T0)
    ticker.tick(T0 + HOUR)
    first, second = runs(idle_client)
    assert idle_client.status(first.id).status is af.RunStatus.CANCELLED
    assert not idle_client.status(second.id).finished
    assert "cancelled" in schedules.get(info.id).events[-1].message
    assert schedules.get(info.id).active_runs == [second.id]


@pytest.mark.parametrize(
    ("catchup", "window", "fired_slots", "missed"),
    [
        ("none", 86400, [], 3),
        ("latest", 86400, [3], 2),
        ("all", 86400, [1, 2, 3], 0),
        ("all", 2 * HOUR, [2, 3], 1),  # the window reaches back to 01:05
    ],
)
def test_catchup_after_downtime(
    idle_client: af.Client, catchup: str, window: float, fired_slots: list[int], missed: int
) -> None:
    """Down from 00:30 past the slot of T0 to 3 h 05 later: slots T0+1h..T0+3h are late."""
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, catchup=catchup, catchup_window=window, overlap="allow_all")
    ticker.tick(T0)
    ticker.tick(T0 + 3 * HOUR + 300)
    got = [r.trigger_data["slot"] for r in runs(idle_client)][1:]
    assert got == [slot_key(T0 + k * HOUR) for k in fired_slots]
    info = schedules.get(info.id)
    assert info.missed == missed
    assert ("missed" in kinds(info)) == bool(missed)
    assert info.next_slot is not None and info.next_slot.timestamp() == T0 + 4 * HOUR
    if fired_slots:
        assert runs(idle_client)[-1].trigger_data["reason"] == "catchup"


def test_a_slot_within_the_grace_is_on_time(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    _, ticker, _ = make(idle_client, clock)  # catch-up none
    assert ticker.tick(T0 + 59) == 1  # a ticker failover fits in the 60 s grace


def test_a_very_long_downtime_is_summarised(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, cron="* * * * *")
    back = T0 + 30 * 86400 + 90  # 43,200 minutes down; the slot 30 s ago is on time
    ticker.tick(back)
    info = schedules.get(info.id)
    assert kinds(info) == ["missed", "fired"]
    assert info.missed == 10_000 and "at least 10000 late slot(s)" in info.events[0].message
    assert info.next_slot is not None and info.next_slot.timestamp() == back + 30
    assert [r.trigger_data["slot"] for r in runs(idle_client)] == [slot_key(back - 30)]


def test_jitter_delays_the_start_deterministically(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock, jitter=600)
    fire_at = info.next_fire_at
    assert fire_at is not None and T0 < fire_at.timestamp() < T0 + 600
    assert schedules.preview(info.id, 1)[0] == fire_at
    assert ticker.tick(fire_at.timestamp() - 0.01) == 0
    assert ticker.tick(fire_at.timestamp()) == 1
    assert runs(idle_client)[0].trigger_data["slot"] == slot_key(T0)  # the key names the slot, not the jitter


@pytest.mark.parametrize(
    ("cron", "night"),
    [("30 1 * * *", datetime(2025, 11, 1, 12)), ("30 2 * * *", datetime(2025, 3, 8, 12))],
    ids=["fall-back 01:30", "spring-forward 02:30"],
)
def test_dst_nights_fire_once_with_a_ticker_every_ten_minutes(
    idle_client: af.Client, cron: str, night: datetime
) -> None:
    ny = ZoneInfo("America/New_York")
    start = night.replace(tzinfo=ny).timestamp()
    clock = Clock(start)
    _, ticker, _ = make(idle_client, clock, cron=cron, timezone="America/New_York", overlap="allow_all")
    for step in range(24 * 6):
        ticker.tick(start + step * 600)
    [run] = runs(idle_client)
    expected = "2025-11-02T01:30:00-04:00" if "1 *" in cron else "2025-03-09T03:00:00-04:00"
    assert run.inputs["slot"] == expected


def test_a_second_ticker_stands_by_until_the_lease_is_released(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, first, _ = make(idle_client, clock)
    second = schedules.ticker(clock=clock)
    assert first.tick(T0 - 5) == 0 and first.holding
    assert second.tick(T0) == 0 and not second.holding
    first.stop()
    assert second.tick(T0) == 1 and second.holding
    assert len(runs(idle_client)) == 1


def test_tickers_racing_without_a_lease_still_start_one_run_per_slot(idle_client: af.Client) -> None:
    """Four tickers whose lease expires at once (as after a long GC pause) tick the same
    due slots of twenty schedules at the same moment."""
    clock = Clock(T0 - 10)
    schedules = Schedules(idle_client.backend.store, idle_client, idle_client.registry, clock=clock)
    for k in range(20):
        schedules.create(flows.tick, cron="0 * * * *", overlap="allow_all", id=f"race{k}")
    tickers = [schedules.ticker(clock=clock, lease=1e-6, holder=f"t{i}") for i in range(4)]
    barrier = threading.Barrier(len(tickers))
    errors: list[BaseException] = []

    def go(ticker: Ticker) -> None:
        try:
            for k in range(3):
                barrier.wait()
                ticker.tick(T0 + k * HOUR)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(t,)) for t in tickers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    started = [(r.trigger_data["schedule_id"], r.trigger_data["slot"]) for r in runs(idle_client)]
    assert len(started) == len(set(started)) == 60
    assert sum(s.fired for s in schedules.list()) == 60


def test_an_edit_during_a_pass_is_kept_and_the_slot_fires_once(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, _, info = make(idle_client, clock)

    class EditingStarter:
        """Changes the schedule while the ticker is starting its run (between its read
        and its write): the ticker's write loses, it reads again and decides again."""

        edits = 0

        def execute(self, workflow: str, inputs: Any = None, **kw: Any) -> af.Run:
            if self.edits == 0:
                self.edits += 1
                schedules.update(info.id, note="edited", priority=7)
            return idle_client.execute(workflow, inputs, **kw)

        def cancel(self, run_id: str) -> af.RunStatus:
            return idle_client.cancel(run_id)

    ticker = Ticker(idle_client.backend.store, schedules.records, EditingStarter(), clock=clock)
    assert ticker.tick(T0) == 1
    got = schedules.get(info.id)
    assert (got.note, got.priority, got.fired) == ("edited", 7, 1)
    assert len(runs(idle_client)) == 1


def test_pause_and_resume(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    schedules, ticker, info = make(idle_client, clock)
    paused = schedules.pause(info.id, note="maintenance")
    assert paused.paused and paused.next_slot is None and paused.note == "maintenance"
    for k in range(3):
        assert ticker.tick(T0 + k * HOUR) == 0
    clock.t = T0 + 2 * HOUR + 1
    resumed = schedules.resume(info.id)
    assert resumed.next_slot is not None and resumed.next_slot.timestamp() == T0 + 3 * HOUR
    assert ticker.tick(T0 + 3 * HOUR) == 1
    assert [r.trigger_data["slot"] for r in runs(idle_client)] == [slot_key(T0 + 3 * HOUR)]


def test_a_slot_that_cannot_start_is_recorded_and_the_schedule_goes_on(idle_client: af.Client) -> None:
    clock = Clock(T0 - 10)
    empty = af.Client(
        idle_client.url, settings=idle_client.settings, registry=af.Registry(), workers=0, scheduler=False
    )
    try:
        schedules = Schedules(idle_client.backend.store, empty, idle_client.registry, clock=clock)
        info = schedules.create(flows.tick, cron="0 * * * *")
        assert schedules.ticker(clock=clock).tick(T0) == 0
        info = schedules.get(info.id)
        assert kinds(info) == ["error"] and "trg_tick" in info.events[0].message
        assert info.next_slot is not None and info.next_slot.timestamp() == T0 + HOUR
    finally:
        empty.close()
