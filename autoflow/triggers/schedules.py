"""Schedules as a client sees them: ``client.schedules.create(...)``, list, pause, backfill...

Every change is a compare-and-set on the stored record (see
:mod:`autoflow.store.schedules`), retried when the ticker wrote in between; a change to
*when* a schedule fires (cron, interval, time zone, jitter, resume) starts it again from
the first slot after now. Workflows declared with ``@af.workflow(schedule=...)`` become
schedules named after the workflow when :meth:`Schedules.sync` runs — which every ticker
does when it starts (``autoflow scheduler MODULE``, an embedded client).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from autoflow import codec
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.errors import InputError, NotFoundError, OutputError
from autoflow.models import (
    CatchupPolicy,
    OverlapPolicy,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleInfo,
)
from autoflow.store.schedules import SCHEDULE
from autoflow.triggers.base import StartedRun, TriggerBook, check_id, load, ts, write
from autoflow.triggers.spec import Spec, parse_interval, slot_key, to_datetime, zone
from autoflow.triggers.ticker import MAX_EVENTS, Ticker, fire_slot, spec_of

__all__ = ["MAX_BACKFILL", "Schedules", "preview"]

#: Slots one backfill call may start (``limit=`` may raise it up to ten times this).
MAX_BACKFILL = 1000
_TIMING = ("cron", "interval", "anchor", "timezone", "jitter")
_FIELDS = (
    *_TIMING,
    *("workflow", "overlap", "catchup", "catchup_window", "inputs", "slot_input"),
    *("priority", "user_id", "organization_id", "note"),
)


def preview(
    *,
    cron: str | None = None,
    interval: float | str | timedelta | None = None,
    timezone: str = "UTC",
    anchor: datetime | float | None = None,
    n: int = 5,
    after: datetime | float | None = None,
) -> builtins.list[datetime]:
    """The next ``n`` slots of a cron expression or interval, without storing anything.

    Example::

        af.triggers.preview(cron="30 1 * * *", timezone="America/New_York", n=3)
    """
    spec = Spec.make(cron=cron, interval=interval, timezone=timezone, anchor=anchor)
    return spec.preview("", _count(n), _when(after, time.time()))


class Schedules(TriggerBook[ScheduleInfo]):
    """The schedules of one backend (``client.schedules``).

    Example::

        s = client.schedules.create("report", cron="0 9 * * MON-FRI", timezone="Europe/Paris",
                                    overlap="skip", catchup="latest", slot_input="day")
        client.schedules.preview(s.id, 3)     # next fire times, in Europe/Paris
        client.schedules.pause(s.id); client.schedules.resume(s.id)
        client.schedules.trigger(s.id)        # a run now
        client.schedules.backfill(s.id, datetime(2026, 1, 1), datetime(2026, 1, 31))
    """

    kind, model, label = SCHEDULE, ScheduleInfo, "schedule"

    # -- create and read -------------------------------------------------------------------
    def create(
        self,
        workflow: Workflow | str,
        *,
        cron: str | None = None,
        interval: float | str | timedelta | None = None,
        timezone: str = "UTC",
        jitter: float | str | timedelta = 0.0,
        anchor: datetime | float | None = None,
        overlap: OverlapPolicy | str = OverlapPolicy.SKIP,
        catchup: CatchupPolicy | str = CatchupPolicy.NONE,
        catchup_window: float | str | timedelta = 86400.0,
        inputs: dict[str, Any] | None = None,
        slot_input: str | None = None,
        priority: int = 0,
        user_id: str | None = None,
        organization_id: str | None = None,
        paused: bool = False,
        note: str = "",
        id: str | None = None,
    ) -> ScheduleInfo:
        """Store a new schedule (InputError naming the field if anything is wrong;
        InputError if ``id`` is taken). It fires from the first slot after now."""
        now = self.clock()
        fields = {
            "workflow": workflow.name if isinstance(workflow, Workflow) else workflow,
            "cron": cron,
            "interval": interval,
            "timezone": timezone,
            "jitter": jitter,
            "anchor": anchor,
            "overlap": overlap,
            "catchup": catchup,
            "catchup_window": catchup_window,
            "inputs": inputs or {},
            "slot_input": slot_input,
            "priority": priority,
            "user_id": user_id,
            "organization_id": organization_id,
            "note": note,
        }
        info = self._validated(check_id(id or f"sch_{codec.new_id()}", "schedule"), fields, now, paused=paused)
        if write(self.records, SCHEDULE, info, create=True, wake_at=_wake(info)) is None:
            raise InputError(f"schedule id {info.id!r} is taken; choose another id or update that schedule")
        return self.get(info.id)

    def preview(self, schedule_id: str, n: int = 5, after: datetime | float | None = None) -> builtins.list[datetime]:
        """The next ``n`` fire times (slot plus its jitter) in the schedule's time zone."""
        info = self.get(schedule_id)
        return spec_of(info).preview(info.id, _count(n), _when(after, self.clock()))

    # -- change ----------------------------------------------------------------------------
    def update(self, schedule_id: str, **changes: Any) -> ScheduleInfo:
        """Change fields (those of :meth:`create` but ``id``); a change of timing
        (cron, interval, anchor, timezone, jitter) fires from the first slot after now."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise InputError(f"cannot update schedule field(s) {sorted(unknown)}; known: {', '.join(_FIELDS)}")
        if isinstance(changes.get("workflow"), Workflow):
            changes["workflow"] = changes["workflow"].name

        def change(info: ScheduleInfo, now: float) -> ScheduleInfo:
            fields = {k: getattr(info, k) for k in _FIELDS}
            fields.update(changes)
            if changes.get("interval") is not None and "cron" not in changes:
                fields["cron"] = None  # switching from cron to an interval
            if changes.get("cron") is not None and "interval" not in changes:
                fields["interval"] = fields["anchor"] = None
            made = self._validated(info.id, fields, now, paused=info.paused, base=info)
            if not set(changes) & set(_TIMING):
                made = made.model_copy(update={"next_slot": info.next_slot, "next_fire_at": info.next_fire_at})
            return made

        return self._change(schedule_id, change)

    def pause(self, schedule_id: str, note: str = "") -> ScheduleInfo:
        """No slot fires until :meth:`resume` (slots meanwhile are not caught up: backfill them)."""
        return self._change(
            schedule_id,
            lambda info, now: _scheduled(info.model_copy(update={"paused": True, "note": note or info.note}), now),
        )

    def resume(self, schedule_id: str) -> ScheduleInfo:
        """Fire again, from the first slot after now."""

        def change(info: ScheduleInfo, now: float) -> ScheduleInfo:
            return _scheduled(info.model_copy(update={"paused": False}), now)

        return self._change(schedule_id, change)

    def delete(self, schedule_id: str) -> None:
        """Remove a schedule (its runs go on); NotFoundError if there is none."""
        if not self.records.delete_record(SCHEDULE, schedule_id):
            raise NotFoundError(f"no schedule {schedule_id!r} on {self.store.url}")

    # -- runs by hand ----------------------------------------------------------------------
    def trigger(self, schedule_id: str, key: str | None = None) -> StartedRun:
        """Start a run now, whatever the overlap policy, under its own idempotency key
        ``schedule:<id>:manual:<key>`` (the same ``key`` twice gives the same run)."""
        info = self.get(schedule_id)
        tag = check_id(key, "trigger key") if key is not None else codec.new_id()
        now = self.clock()
        inputs = dict(info.inputs)
        if info.slot_input:
            inputs[info.slot_input] = to_datetime(now, info.timezone).isoformat()
        run = self.starter.execute(
            info.workflow,
            inputs,
            priority=info.priority,
            user_id=info.user_id,
            organization_id=info.organization_id,
            trigger="schedule",
            trigger_data={
                "schedule_id": info.id,
                "slot": None,
                "fired_at": to_datetime(now).isoformat(),
                "reason": "manual",
            },
            idempotency_key=f"schedule:{info.id}:manual:{tag}",
        )
        event = ScheduleEvent(
            kind=ScheduleEventKind.FIRED, slot=None, at=to_datetime(now), run_id=run.id, message="triggered by hand"
        )
        self._record(schedule_id, event, 1, run.id)
        return run

    def backfill(
        self, schedule_id: str, start: datetime | float, end: datetime | float, *, limit: int = MAX_BACKFILL
    ) -> builtins.list[str]:
        """Start the runs of every slot with ``start <= slot <= end`` (naive datetimes are
        in the schedule's time zone), oldest first, whatever the overlap policy; returns
        their run ids. A slot that already ran gives its existing run (same key). More
        than ``limit`` slots is an InputError and starts nothing."""
        info = self.get(schedule_id)
        if not isinstance(limit, int) or not 1 <= limit <= 10 * MAX_BACKFILL:
            raise InputError(f"limit must be an int from 1 to {10 * MAX_BACKFILL}, got {limit!r}")
        begin, finish = _when(start, 0.0, info.timezone), _when(end, 0.0, info.timezone)
        if finish < begin:
            raise InputError(f"backfill end {end!r} is before its start {start!r}")
        slots = spec_of(info).slots_between(begin, finish, limit=limit)
        if len(slots) > limit:
            raise InputError(
                f"backfill of schedule {info.id!r} from {slot_key(begin)} to {slot_key(finish)} covers more than "
                f"{limit} slots; narrow the range or pass a larger limit= (at most {10 * MAX_BACKFILL})"
            )
        now = self.clock()
        runs = [fire_slot(self.starter, info, s, now, "backfill") for s in slots]
        if runs:
            note = f"backfill of {len(runs)} slot(s) {slot_key(slots[0])} to {slot_key(slots[-1])}"
            event = ScheduleEvent(
                kind=ScheduleEventKind.FIRED,
                slot=to_datetime(slots[0]),
                at=to_datetime(now),
                run_id=runs[0],
                message=note,
            )
            self._record(schedule_id, event, len(runs), None)
        return runs

    # -- decorator schedules and the ticker ------------------------------------------------
    def sync(self, registry: WorkflowRegistry | None = None) -> builtins.list[ScheduleInfo]:
        """Make a schedule (id = workflow name, ``source="decorator"``) of each workflow of
        ``registry`` declared with ``@af.workflow(schedule=..., timezone=...)``. A schedule
        that exists keeps its policies and paused state; a changed cron or time zone is
        taken over. Returns the schedules synced; InputError after syncing the others if
        a schedule made by hand holds a workflow's name."""
        out, clashes = [], []
        for wf in (registry or self.registry).workflows.values():
            if not wf.schedule:
                continue
            tz = wf.timezone or "UTC"
            existing = load(ScheduleInfo, self.records.get_record(SCHEDULE, wf.name))
            if existing is None:
                out.append(self._create_decorated(wf, tz))
            elif existing.source != "decorator":
                clashes.append(wf.name)
            elif existing.cron != wf.schedule or existing.timezone != tz:
                out.append(self.update(wf.name, cron=wf.schedule, timezone=tz))
            else:
                out.append(existing)
        if clashes:
            raise InputError(
                f"workflow(s) {', '.join(repr(c) for c in clashes)} declare schedule=..., but schedules with "
                "those ids were created by hand; delete or rename those schedules"
            )
        return out

    def _create_decorated(self, wf: Workflow, tz: str) -> ScheduleInfo:
        info = self._validated(wf.name, {"workflow": wf.name, "cron": wf.schedule, "timezone": tz}, self.clock())
        info = info.model_copy(update={"source": "decorator"})
        write(self.records, SCHEDULE, info, create=True, wake_at=_wake(info))  # lost a race: another sync made it
        return self.get(wf.name)

    def ticker(self, **options: Any) -> Ticker:
        """A :class:`Ticker` over these schedules (options: clock, lease, interval, grace)."""
        return Ticker(self.store, self.records, self.starter, **options)

    # -- internals -------------------------------------------------------------------------
    def _validated(
        self,
        schedule_id: str,
        fields: dict[str, Any],
        now: float,
        *,
        paused: bool = False,
        base: ScheduleInfo | None = None,
    ) -> ScheduleInfo:
        f = {k: fields.get(k) for k in _FIELDS}
        spec = Spec.make(
            cron=f["cron"],
            interval=f["interval"],
            anchor=f["anchor"],
            timezone=f["timezone"] or "UTC",
            jitter=f["jitter"] or 0.0,
        )
        name = f["workflow"]
        if not isinstance(name, str):
            raise InputError(f"workflow must be an af.Workflow or a registered name, got {name!r}")
        wf = self.resolve(name, f["organization_id"])  # NotFoundError lists the known ones
        inputs = f["inputs"] or {}
        if not isinstance(inputs, dict):
            raise InputError(f"inputs must be a dict of workflow inputs, got {type(inputs).__name__}")
        try:
            inputs = codec.to_json_value(inputs, where="inputs")
        except OutputError as exc:
            raise InputError(str(exc)) from None
        slot_input = f["slot_input"]
        if slot_input is not None and slot_input not in wf.inputs:
            raise InputError(f"slot_input {slot_input!r} is not an input of workflow {name!r} ({', '.join(wf.inputs)})")
        wf.validate_inputs({**inputs, **({slot_input: to_datetime(now).isoformat()} if slot_input else {})})
        priority = f["priority"] or 0
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InputError(f"priority must be an int, got {priority!r}")
        try:
            overlap = OverlapPolicy(f["overlap"] or OverlapPolicy.SKIP)
            catchup = CatchupPolicy(f["catchup"] or CatchupPolicy.NONE)
        except ValueError as exc:
            raise InputError(
                f"{exc}; overlap is one of {[p.value for p in OverlapPolicy]}, catchup one of "
                f"{[p.value for p in CatchupPolicy]}"
            ) from None
        window = f["catchup_window"]
        window = 86400.0 if window is None else _seconds(window, "catchup_window")
        made = ScheduleInfo(
            **(base.model_dump(exclude=set(_FIELDS) | {"paused", "updated_at"}) if base else {}),
            **({} if base else {"id": schedule_id, "created_at": to_datetime(now)}),
            workflow=name,
            cron=spec.cron,
            interval=spec.interval,
            anchor=to_datetime(spec.anchor) if spec.interval is not None and f["anchor"] is not None else None,
            timezone=spec.timezone,
            jitter=spec.jitter,
            overlap=overlap,
            catchup=catchup,
            catchup_window=window,
            inputs=inputs,
            slot_input=slot_input,
            priority=priority,
            user_id=f["user_id"],
            organization_id=f["organization_id"],
            note=str(f["note"] or ""),
            paused=paused,
            updated_at=to_datetime(now),
        )
        return _scheduled(made, now)

    def _change(self, schedule_id: str, change: Callable[[ScheduleInfo, float], ScheduleInfo]) -> ScheduleInfo:
        for _ in range(20):
            info = self.get(schedule_id)
            now = self.clock()
            made = change(info, now).model_copy(update={"updated_at": to_datetime(now)})
            if write(self.records, SCHEDULE, made, create=False, wake_at=_wake(made)) is not None:
                return self.get(schedule_id)
        raise InputError(f"schedule {schedule_id!r} kept changing under this update; try again")

    def _record(self, schedule_id: str, event: ScheduleEvent, fired: int, run_id: str | None) -> None:
        def change(info: ScheduleInfo, _: float) -> ScheduleInfo:
            active = info.active_runs
            if run_id and info.overlap is not OverlapPolicy.ALLOW_ALL:
                active = [*active, run_id]
            events = [*info.events, event][-MAX_EVENTS:]
            return info.model_copy(update={"events": events, "fired": info.fired + fired, "active_runs": active})

        self._change(schedule_id, change)


def _scheduled(info: ScheduleInfo, now: float) -> ScheduleInfo:
    """``info`` with its next slot set to the first one after ``now`` (none if paused)."""
    if info.paused:
        return info.model_copy(update={"next_slot": None, "next_fire_at": None, "buffered_slot": None})
    spec = spec_of(info)
    slot = next(spec.slots_after(now, limit=1), None)
    if slot is None:
        return info.model_copy(update={"next_slot": None, "next_fire_at": None})
    fire = slot + spec.jitter_for(info.id, slot)
    return info.model_copy(update={"next_slot": to_datetime(slot), "next_fire_at": to_datetime(fire)})


def _wake(info: ScheduleInfo) -> float | None:
    if info.paused:
        return None
    return ts(info.next_fire_at)


def _count(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
        raise InputError(f"n must be an int from 1 to 1000, got {n!r}")
    return n


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        value = parse_interval(value, field=field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise InputError(f"{field} must be seconds >= 0, a timedelta or text like '6h', got {value!r}")
    return float(value)


def _when(value: datetime | float | None, default: float, tz: str = "UTC") -> float:
    """Unix seconds of a datetime (naive: in zone ``tz``) or of seconds; ``default`` for None."""
    if value is None:
        return default
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone(tz))).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise InputError(f"expected a datetime or unix seconds, got {value!r}")
