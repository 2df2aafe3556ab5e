"""When schedules fire: cron in a time zone across DST, intervals, jitter, validation (pure).

The DST rows follow the cases croniter's own suite checks (test_dst_daily,
test_dst_hourly, test_dst_gap_shift_is_not_a_fire_time on Lord Howe), with autoflow's
decision as the expected result: a repeated wall time fires once (its first
occurrence), a skipped wall time fires once (when the clock jumps).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from autoflow.errors import InputError
from autoflow.triggers import preview
from autoflow.triggers.spec import Spec, parse_interval, slot_key, to_datetime

NY = "America/New_York"


def fires(cron: str, tz: str, start: str, n: int) -> list[str]:
    spec = Spec.make(cron=cron, timezone=tz)
    after = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(tz)).timestamp()
    return [to_datetime(s, tz).isoformat() for s in spec.slots_after(after, limit=n)]


DST_TABLE = [
    # fall-back night (01:00-02:00 happens twice in New York, 2025-11-02): 01:30 fires once
    pytest.param(
        "30 1 * * *",
        NY,
        "2025-11-01T12:00",
        ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"],
        id="fall-back daily 01:30 once",
    ),
    # spring-forward night (02:00-03:00 does not exist, 2025-03-09): 02:30 fires once, at 03:00
    pytest.param(
        "30 2 * * *",
        NY,
        "2025-03-08T12:00",
        ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"],
        id="spring-forward daily 02:30 once at the jump",
    ),
    pytest.param(
        "*/30 * * * *",
        NY,
        "2025-03-09T01:00",
        ["2025-03-09T01:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:30:00-04:00"],
        id="*/30 across spring-forward: gap slots merge at 03:00",
    ),
    pytest.param(
        "*/30 * * * *",
        NY,
        "2025-11-02T00:45",
        [
            "2025-11-02T01:00:00-04:00",
            "2025-11-02T01:30:00-04:00",
            "2025-11-02T02:00:00-05:00",
            "2025-11-02T02:30:00-05:00",
        ],
        id="*/30 across fall-back: the repeated hour runs once",
    ),
    pytest.param(
        "0 * * * *",
        NY,
        "2025-11-02T00:30",
        ["2025-11-02T01:00:00-04:00", "2025-11-02T02:00:00-05:00", "2025-11-02T03:00:00-05:00"],
        id="hourly across fall-back pauses for the repeated hour",
    ),
    pytest.param(
        "0 * * * *",
        NY,
        "2025-03-09T00:30",
        ["2025-03-09T01:00:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T04:00:00-04:00"],
        id="hourly across spring-forward",
    ),
    # Lord Howe moves its clocks by 30 minutes: 02:00 -> 02:30 on 2025-10-05, 02:00 -> 01:30 on 2025-04-06
    pytest.param(
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2025-10-04T12:00",
        ["2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00"],
        id="Lord Howe gap: 02:15 fires at 02:30",
    ),
    pytest.param(
        "*/15 * * * *",
        "Australia/Lord_Howe",
        "2025-10-05T01:40",
        ["2025-10-05T01:45:00+10:30", "2025-10-05T02:30:00+11:00", "2025-10-05T02:45:00+11:00"],
        id="Lord Howe */15 across the gap",
    ),
    pytest.param(
        "*/15 * * * *",
        "Australia/Lord_Howe",
        "2025-04-06T01:20",
        [
            "2025-04-06T01:30:00+11:00",
            "2025-04-06T01:45:00+11:00",
            "2025-04-06T02:00:00+10:30",
            "2025-04-06T02:15:00+10:30",
        ],
        id="Lord Howe */15 across the repeated half hour",
    ),
    pytest.param(
        "0 9 * * MON",
        "America/Sao_Paulo",
        "2026-01-01T00:00",
        ["2026-01-05T09:00:00-03:00", "2026-01-12T09:00:00-03:00"],
        id="weekly Monday 09:00 Sao Paulo",
    ),
    pytest.param(
        "0 0 1 1 *",
        "UTC",
        "2025-06-01T00:00",
        ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"],
        id="yearly",
    ),
]


@pytest.mark.parametrize(("cron", "tz", "start", "expected"), DST_TABLE)
def test_cron_slots_across_dst(cron: str, tz: str, start: str, expected: list[str]) -> None:
    assert fires(cron, tz, start, len(expected)) == expected


TRANSITIONS = {
    NY: ("2025-03-09", "2025-11-02"),
    "Australia/Lord_Howe": ("2025-04-06", "2025-10-05"),
    "Europe/London": ("2025-03-30", "2025-10-26"),
}


@pytest.mark.parametrize("cron", ["30 1 * * *", "*/30 * * * *", "0 * * * *", "*/7 * * * *", "15,45 0-3 * * *"])
@pytest.mark.parametrize("tz", sorted(TRANSITIONS))
def test_around_each_transition_no_wall_time_fires_twice(cron: str, tz: str) -> None:
    spec = Spec.make(cron=cron, timezone=tz)
    for day in TRANSITIONS[tz]:
        start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(tz)).timestamp() - 2 * 86400
        end = start + 4 * 86400
        slots = list(itertools.takewhile(lambda s, end=end: s < end, spec.slots_after(start)))
        assert all(b > a for a, b in itertools.pairwise(slots))
        walls = [to_datetime(s, tz).replace(tzinfo=None) for s in slots]
        assert len(walls) == len(set(walls)), "a wall-clock time fired twice"
        if cron == "30 1 * * *":
            assert len(slots) == 4  # one a day, DST night included


def test_resuming_inside_the_repeated_hour_does_not_fire_its_second_pass() -> None:
    spec = Spec.make(cron="30 1 * * *", timezone=NY)
    second_pass_0115 = datetime(2025, 11, 2, 1, 15, tzinfo=ZoneInfo(NY), fold=1).timestamp()
    nxt = next(spec.slots_after(second_pass_0115))
    assert to_datetime(nxt, NY).isoformat() == "2025-11-03T01:30:00-05:00"


def test_seconds_cron_has_six_fields_seconds_last() -> None:
    got = fires("* * * * * */15", "UTC", "2026-01-01T00:00", 3)
    assert got == ["2026-01-01T00:00:15+00:00", "2026-01-01T00:00:30+00:00", "2026-01-01T00:00:45+00:00"]


def test_intervals_follow_utc_across_dst() -> None:
    spec = Spec.make(interval="1h", timezone=NY)
    start = datetime(2025, 11, 2, 0, 30, tzinfo=ZoneInfo(NY)).timestamp()
    slots = list(spec.slots_after(start, limit=4))
    assert [b - a for a, b in itertools.pairwise(slots)] == [3600.0, 3600.0, 3600.0]
    assert [to_datetime(s, NY).strftime("%H:%M%z") for s in slots] == [
        "01:00-0400",
        "01:00-0500",
        "02:00-0500",
        "03:00-0500",
    ]


def test_interval_anchor() -> None:
    anchor = datetime(2026, 1, 1, 0, 7, tzinfo=timezone.utc)
    spec = Spec.make(interval=timedelta(minutes=15), anchor=anchor)
    got = [slot_key(s) for s in spec.slots_after(anchor.timestamp(), limit=2)]
    assert got == ["2026-01-01T00:22:00Z", "2026-01-01T00:37:00Z"]
    naive = Spec.make(interval=60, anchor=datetime(2026, 1, 1, 9, 0, 30), timezone="Europe/Paris")
    assert slot_key(next(naive.slots_after(anchor.timestamp()))) == "2026-01-01T00:07:30Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900.0), ("every 2h", 7200.0), ("1d", 86400.0), ("30 s", 30.0), (90, 90.0), (timedelta(hours=1), 3600.0)],
)
def test_parse_interval(text: object, seconds: float) -> None:
    assert parse_interval(text) == seconds  # type: ignore[arg-type]


def test_jitter_is_deterministic_per_slot_and_bounded() -> None:
    spec = Spec.make(cron="* * * * *", jitter=30)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    slots = list(spec.slots_after(start, limit=200))
    offsets = [spec.jitter_for("nightly", s) for s in slots]
    assert offsets == [Spec.make(cron="* * * * *", jitter=30).jitter_for("nightly", s) for s in slots]
    assert all(0 <= o < 30 for o in offsets)
    assert len(set(offsets)) > 150  # spread, not one value
    assert offsets != [spec.jitter_for("other", s) for s in slots]  # per schedule


def test_preview_without_a_stored_schedule() -> None:
    after = datetime(2025, 11, 1, 12, tzinfo=ZoneInfo(NY))
    got = preview(cron="30 1 * * *", timezone=NY, n=2, after=after)
    assert [d.isoformat() for d in got] == ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron"),
        ({"cron": "* * * * *", "interval": 60}, "exactly one of cron"),
        ({"cron": "every minute"}, "cron 'every minute' is not a valid cron expression"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus'"),
        ({"interval": "soon"}, "interval must be"),
        ({"interval": 0.5}, "at least 1 second"),
        ({"cron": "* * * * *", "jitter": -1}, "jitter must be"),
        ({"cron": "* * * * *", "anchor": datetime(2026, 1, 1)}, "anchor= applies to interval"),
    ],
)
def test_bad_specs_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("*", r"\*")):
        Spec.make(**kwargs)  # type: ignore[arg-type]


def test_slots_between_is_inclusive_and_bounded() -> None:
    spec = Spec.make(cron="0 * * * *")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert len(spec.slots_between(start, start + 3 * 3600)) == 4
    assert len(spec.slots_between(start, start + 1000 * 3600, limit=10)) == 11  # limit + 1: "more than"
