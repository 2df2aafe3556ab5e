"""When a schedule fires: cron or interval slots in a time zone, DST rules, jitter. Pure.

A *slot* is the instant a schedule is due (unix seconds, UTC); it names the run it starts
(idempotency key ``schedule:<id>:<slot key>``). The ticker fires a slot at ``slot +
jitter``, where the jitter is derived from the schedule id and the slot, so every ticker
computes the same one.

DST, decided (see docs/schedules.md for the tables the tests check):

* **cron expressions follow the wall clock** of the schedule's time zone;
* **a wall-clock time that happens twice** (fall-back night) **fires once**, at its first
  occurrence: a daily 01:30 job runs at 01:30 summer time, not again an hour later; an
  hourly job pauses for the repeated hour (as in Vixie cron and Prefect);
* **a wall-clock time that does not exist** (spring-forward night) **fires once, at the
  moment the clock jumps**: a daily 02:30 job in New York runs at 03:00 summer time; the
  slots of ``*/30`` inside the gap (02:00, 02:30) and 03:00 merge into one firing at 03:00;
* **intervals follow UTC**: ``every 1h`` is 3600 s of elapsed time, whatever the clock
  says, counted from an anchor (default the Unix epoch, so ``every 1h`` fires on the hour
  in UTC).

croniter alone, iterated on aware datetimes, fires the fall-back 01:30 twice; here it is
iterated on naive wall-clock times and each is mapped to one instant.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from autoflow.errors import InputError

__all__ = [
    "MAX_SLOTS",
    "Spec",
    "parse_interval",
    "slot_key",
    "to_datetime",
    "zone",
]

UTC = timezone.utc
#: No iteration over slots ever yields more than this many (backfill, catch-up, preview).
MAX_SLOTS = 100_000
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_INTERVAL = re.compile(r"^\s*(?:every\s+)?(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)


def parse_interval(value: float | int | str | timedelta, *, field: str = "interval") -> float:
    """Seconds of an interval given as seconds, a timedelta or text like ``"15m"``,
    ``"every 2h"``; at least one second."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _INTERVAL.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise InputError(f"{field} must be seconds, a timedelta or text like '15m' or 'every 2h', got {value!r}")
    if not math.isfinite(seconds) or seconds < 1:
        raise InputError(f"{field} must be at least 1 second, got {value!r}")
    return seconds


def slot_key(slot: float) -> str:
    """The slot's name in idempotency keys: ISO 8601 UTC, milliseconds only if any."""
    moment = datetime.fromtimestamp(round(slot, 3), UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def to_datetime(ts: float, tz: str = "UTC") -> datetime:
    """An aware datetime of unix seconds in zone ``tz``."""
    return datetime.fromtimestamp(ts, UTC if tz == "UTC" else ZoneInfo(tz))


@dataclass(frozen=True)
class Spec:
    """When a schedule fires. Build with :meth:`make` (validates, errors name the field).

    Example::

        spec = Spec.make(cron="30 1 * * *", timezone="America/New_York")
        [to_datetime(s, spec.timezone) for s in spec.slots_after(time.time(), limit=3)]
    """

    cron: str | None = None
    interval: float | None = None
    anchor: float = 0.0
    timezone: str = "UTC"
    jitter: float = 0.0

    @classmethod
    def make(
        cls,
        *,
        cron: str | None = None,
        interval: float | int | str | timedelta | None = None,
        anchor: datetime | float | None = None,
        timezone: str = "UTC",
        jitter: float | int | str | timedelta = 0.0,
    ) -> Spec:
        if (cron is None) == (interval is None):
            raise InputError("give exactly one of cron= (an expression) or interval= (seconds or '15m')")
        tz = zone(timezone)
        seconds = None if interval is None else parse_interval(interval)
        spread = _jitter(jitter)
        if anchor is None:
            start = 0.0
        elif isinstance(anchor, datetime):
            start = (anchor if anchor.tzinfo else anchor.replace(tzinfo=tz)).timestamp()
        elif isinstance(anchor, (int, float)) and not isinstance(anchor, bool):
            start = float(anchor)
        else:
            raise InputError(f"anchor must be a datetime or unix seconds, got {anchor!r}")
        if cron is not None:
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise InputError(f"cron {cron!r} is not a valid cron expression (5 fields, or 6 with seconds last)")
            if anchor is not None:
                raise InputError("anchor= applies to interval schedules only")
        spec = cls(cron=cron, interval=seconds, anchor=start, timezone=timezone, jitter=spread)
        try:
            next(spec.slots_after(0.0 if cron is None else 946684800.0, limit=1))
        except (StopIteration, CroniterBadDateError):
            raise InputError(f"cron {cron!r} never fires") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cron {cron!r} cannot be used: {exc}") from None
        return spec

    # -- slots -----------------------------------------------------------------------------
    def slots_after(self, after: float, *, limit: int = MAX_SLOTS) -> Iterator[float]:
        """Slots strictly after ``after`` (unix s), increasing, at most ``limit``."""
        source = self._cron_after(self.cron, after) if self.cron is not None else self._interval_after(after)
        for count, slot in enumerate(source):
            if count >= limit:
                return
            yield slot

    def slots_between(self, start: float, end: float, *, limit: int = MAX_SLOTS) -> list[float]:
        """Slots with ``start <= slot <= end``, at most ``limit + 1`` (so that a caller can
        tell the range holds more than ``limit``)."""
        out = []
        for slot in self.slots_after(start - 0.0005, limit=limit + 1):
            if slot > end:
                break
            out.append(slot)
        return out

    def latest_at_or_before(self, now: float, *, horizon: float) -> float | None:
        """The last slot ``<= now`` no older than ``horizon`` seconds, or None."""
        found = None
        for slot in self.slots_after(now - horizon - 0.0005):
            if slot > now:
                break
            found = slot
        return found

    def _interval_after(self, after: float) -> Iterator[float]:
        step = self.interval or 1.0  # make() sets exactly one of cron and interval
        k = math.floor((after - self.anchor) / step)
        while True:
            slot = round(self.anchor + k * step, 3)
            if slot > after:
                yield slot
            k += 1

    def _cron_after(self, cron: str, after: float) -> Iterator[float]:
        tz = zone(self.timezone)
        # Iterate on naive wall-clock times: croniter then knows nothing of DST, and each
        # wall time is mapped to one instant below (first occurrence; gaps to the jump).
        wall = datetime.fromtimestamp(after, tz).replace(tzinfo=None)
        it = copy.copy(_parsed(cron))  # parsing is most of croniter's cost: once per expression
        it.set_current(wall, force=True)
        last = after
        while True:
            instant = _instant(it.get_next(datetime), tz)
            if instant > last:  # the repeated hour's second pass, or gap slots merged
                last = instant
                yield instant

    def jitter_for(self, schedule_id: str, slot: float) -> float:
        """Seconds added to ``slot`` before it fires: fixed by (schedule, slot)."""
        if not self.jitter:
            return 0.0
        digest = hashlib.sha256(f"{schedule_id}|{slot_key(slot)}".encode()).digest()
        return round(int.from_bytes(digest[:8], "big") / 2**64 * self.jitter, 3)

    def preview(self, schedule_id: str, n: int, after: float) -> list[datetime]:
        """The next ``n`` fire times (slot + jitter) after ``after``, in the schedule's zone."""
        return [
            to_datetime(slot + self.jitter_for(schedule_id, slot), self.timezone)
            for slot in self.slots_after(after, limit=n)
        ]


@functools.lru_cache(maxsize=1024)
def _parsed(cron: str) -> croniter:
    """A parsed expression to copy (croniter only reads its parsed fields while iterating)."""
    return croniter(cron, 0.0)


def _jitter(value: float | int | str | timedelta) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, (str, timedelta)):
        return parse_interval(value, field="jitter")
    raise InputError(f"jitter must be seconds >= 0, a timedelta or text like '30s', got {value!r}")


def zone(name: str) -> ZoneInfo | timezone:
    """The time zone named ``name`` (InputError naming it if unknown)."""
    if name == "UTC":
        return UTC
    if not isinstance(name, str) or not name:
        raise InputError(f"timezone must be an IANA name like 'America/Sao_Paulo', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"timezone {name!r} is not a known IANA time zone (e.g. 'Europe/Paris')") from None


def _instant(wall: datetime, tz: ZoneInfo | timezone) -> float:
    """The instant of a naive wall-clock time: its first occurrence if it happens twice,
    the moment the clock jumps over it if it does not exist."""
    first = wall.replace(tzinfo=tz, fold=0).timestamp()
    if datetime.fromtimestamp(first, tz).replace(tzinfo=None) == wall:
        return first
    # In a gap: with fold=0 zoneinfo applies the offset from before the jump (an instant
    # after it), with fold=1 the one after (an instant before it). Bisect between them for
    # the first second whose wall time is past ``wall``: the jump.
    lo = math.floor(wall.replace(tzinfo=tz, fold=1).timestamp())
    hi = math.ceil(first)
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return float(hi)
