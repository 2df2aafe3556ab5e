"""The ticker: fires the due slots of schedules, one ticker at a time across the cluster.

Every process that may tick (``autoflow scheduler`` replicas, an embedded ``af.Client``)
runs a :class:`Ticker`; only the holder of a lease in the store acts, the others stand
by and take over when the lease expires (a failover fits in the 60 s grace, so no slot
is late). Exactly one run per slot does not rest on the lease alone: the run of a slot
is started under the idempotency key ``schedule:<id>:<slot>``, so two tickers, a
restart in the middle of a pass, or a pass repeated after a lost write find the run
that was started first. A pass over a schedule is read → decide and start runs →
compare-and-set; a concurrent edit makes it read again and decide again, and the runs
it starts again are the same runs.

Time comes from an injected clock (``tick(now=...)`` in tests): nothing here sleeps to
decide anything.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from autoflow import codec
from autoflow.errors import AutoflowError, BackendError
from autoflow.models import (
    CatchupPolicy,
    OverlapPolicy,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleInfo,
)
from autoflow.store.base import Store
from autoflow.store.schedules import SCHEDULE, TriggerStore
from autoflow.triggers.base import Starter, load, start_run, ts, write
from autoflow.triggers.spec import Spec, slot_key, to_datetime

__all__ = ["GRACE", "MAX_EVENTS", "TICKER_SLOT", "Ticker", "spec_of"]

log = logging.getLogger("autoflow.ticker")
TICKER_SLOT = "autoflow:ticker"
#: A slot fired at most this many seconds after its time is on time; later it is late
#: (downtime) and the catch-up policy decides.
GRACE = 60.0
#: Events kept per schedule (the newest).
MAX_EVENTS = 50
#: Slots one pass handles per schedule; more (a long catch-up) continue at the next pass.
MAX_PER_PASS = 1000
#: Late slots counted one by one before a long downtime is summarised as "at least".
MAX_COUNTED = 10_000


def spec_of(info: ScheduleInfo) -> Spec:
    return Spec(
        cron=info.cron,
        interval=info.interval,
        anchor=ts(info.anchor) or 0.0,
        timezone=info.timezone,
        jitter=info.jitter,
    )


@dataclass
class _Pass:
    """What one pass decided for one schedule; turned into the next record at the end."""

    info: ScheduleInfo
    spec: Spec
    now: float
    active: list[str]
    buffered: float | None
    events: list[ScheduleEvent] = field(default_factory=list)
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    last: tuple[float, str] | None = None  # (slot, run id) of the newest fired slot

    def event(self, kind: ScheduleEventKind, slot: float | None, run_id: str | None = None, message: str = "") -> None:
        self.events.append(
            ScheduleEvent(
                kind=kind,
                slot=None if slot is None else to_datetime(slot),
                at=to_datetime(self.now),
                run_id=run_id,
                message=message,
            )
        )


class Ticker:
    """Fires due schedule slots; see the module docstring.

    Example::

        ticker = Ticker(store, trigger_store(store), starter=client)
        ticker.tick()                 # one pass now; returns the number of runs started
        ticker.tick(now=1767225600)   # one pass at a given time (tests)
        ticker.start(); ticker.stop() # in a background thread
    """

    def __init__(
        self,
        store: Store,
        records: TriggerStore,
        starter: Starter,
        *,
        clock: Callable[[], float] = time.time,
        lease: float = 10.0,
        interval: float = 1.0,
        grace: float = GRACE,
        holder: str | None = None,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.records = records
        self.starter = starter
        self.clock = clock
        self.lease = lease
        self.interval = interval
        self.grace = grace
        self.batch = batch
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.holding = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Fire every due slot once; returns how many runs were started (0 when another
        ticker holds the lease)."""
        self.holding = self.store.acquire_slot(TICKER_SLOT, self.holder, 1, self.lease)
        if not self.holding:
            return 0
        now = self.clock() if now is None else now
        # One schedule after the other: measured, threads overlapping the store round trips
        # were slower (the cost is Python CPU under the GIL, not waiting).
        return sum(self._one(sid, now) for sid in self.records.due_records(SCHEDULE, now, self.batch))

    def _one(self, schedule_id: str, now: float) -> int:
        try:
            return self._advance(schedule_id, now)
        except BackendError:
            raise
        except Exception:  # one broken record must not stop the others; it stays due
            log.exception("schedule %s: pass failed", schedule_id)
            return 0

    def _advance(self, schedule_id: str, now: float) -> int:
        for _ in range(10):
            info = load(ScheduleInfo, self.records.get_record(SCHEDULE, schedule_id))
            if info is None:
                return 0
            new, wake = self._decide(info, now)
            if write(self.records, SCHEDULE, new.info, create=False, wake_at=wake) is not None:
                return new.fired
            log.debug("schedule %s changed during the pass; deciding again", schedule_id)
        log.warning("schedule %s: changed 10 times during one pass; trying at the next one", schedule_id)
        return 0

    def _decide(self, info: ScheduleInfo, now: float) -> tuple[_Pass, float | None]:
        spec = spec_of(info)
        if info.paused or info.next_slot is None:
            return _Pass(info, spec, now, list(info.active_runs), ts(info.buffered_slot)), None
        tracked = info.overlap is not OverlapPolicy.ALLOW_ALL
        active = [r for r in info.active_runs if tracked and not self._finished(r)]
        state = _Pass(info, spec, now, active, ts(info.buffered_slot))
        if state.buffered is not None and not state.active:
            waiting, state.buffered = state.buffered, None
            self._fire(state, waiting, "buffered")
        slot: float | None = self._skip_old(state, info.next_slot.timestamp())
        due: list[tuple[float, bool]] = []  # (slot, on time)
        while slot is not None and slot + spec.jitter_for(info.id, slot) <= now and len(due) < MAX_PER_PASS:
            due.append((slot, slot + spec.jitter_for(info.id, slot) >= now - self.grace))
            slot = next(spec.slots_after(slot, limit=1), None)
        if info.catchup is CatchupPolicy.LATEST:
            late = [s for s, on_time in due if not on_time]
            keep = late[-1:] if len(late) == len(due) else []
            for s in late:
                if s not in keep:
                    self._miss(state, s, s, 1)
            due = [(s, on_time) for s, on_time in due if on_time or s in keep]
        for s, on_time in due:
            self._fire(state, s, "schedule" if on_time else "catchup")
        return self._finish(state, slot, more=len(due) >= MAX_PER_PASS)

    def _skip_old(self, state: _Pass, slot: float) -> float | None:
        """Slots too old for the catch-up policy are missed; returns the first slot left."""
        info, spec, now = state.info, state.spec, state.now
        horizon = now - self.grace if info.catchup is CatchupPolicy.NONE else now - info.catchup_window
        horizon = min(horizon, now - self.grace)  # never call an on-time slot missed
        if slot + spec.jitter_for(info.id, slot) >= horizon:
            return slot
        old = [slot, *spec.slots_between(slot + 0.001, horizon, limit=MAX_COUNTED)]
        old = [s for s in old if s + spec.jitter_for(info.id, s) < horizon][:MAX_COUNTED]
        self._miss(state, old[0], old[-1], len(old), at_least=len(old) >= MAX_COUNTED)
        return next(spec.slots_after(old[-1] if len(old) < MAX_COUNTED else horizon, limit=1), None)

    def _miss(self, state: _Pass, first: float, last: float, count: int, *, at_least: bool = False) -> None:
        state.missed += count
        many = f"at least {count}" if at_least else str(count)
        span = slot_key(first) if count == 1 else f"{slot_key(first)} to {slot_key(last)}"
        policy = state.info.catchup.value
        state.event(ScheduleEventKind.MISSED, first, message=f"{many} late slot(s) {span} (catch-up policy {policy})")

    def _fire(self, state: _Pass, slot: float, reason: str) -> None:
        info = state.info
        if state.active and info.overlap is not OverlapPolicy.ALLOW_ALL:
            running = ", ".join(state.active)
            if info.overlap is OverlapPolicy.SKIP:
                state.skipped += 1
                state.event(ScheduleEventKind.SKIPPED, slot, message=f"run(s) {running} still going (overlap skip)")
                return
            if info.overlap is OverlapPolicy.BUFFER_ONE:
                if state.buffered is None:
                    state.buffered = slot
                    state.event(ScheduleEventKind.BUFFERED, slot, message=f"waits for run(s) {running}")
                else:
                    state.skipped += 1
                    state.event(ScheduleEventKind.SKIPPED, slot, message="a slot is buffered already (buffer_one)")
                return
            for run_id in state.active:  # cancel_other
                try:
                    self.starter.cancel(run_id)
                except AutoflowError as exc:  # gone meanwhile (purged): nothing to cancel
                    log.info("schedule %s: could not cancel run %s: %s", info.id, run_id, exc)
            state.active = []
            reason += f" (cancelled {running})"
        try:
            run_id = fire_slot(self.starter, info, slot, state.now, reason)
        except BackendError:
            raise
        except Exception as exc:  # e.g. the workflow is not registered in this process
            message = codec.redact_text(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("schedule %s: slot %s not started: %s", info.id, slot_key(slot), message)
            state.event(ScheduleEventKind.ERROR, slot, message=message)
            return
        state.fired += 1
        state.last = (slot, run_id)
        if info.overlap is not OverlapPolicy.ALLOW_ALL:
            state.active.append(run_id)
        state.event(ScheduleEventKind.FIRED, slot, run_id, reason)

    def _finish(self, state: _Pass, slot: float | None, *, more: bool) -> tuple[_Pass, float | None]:
        info, spec = state.info, state.spec
        fire_at = None if slot is None else slot + spec.jitter_for(info.id, slot)
        changes: dict[str, object] = {
            "next_slot": None if slot is None else to_datetime(slot),
            "next_fire_at": None if fire_at is None else to_datetime(fire_at),
            "active_runs": state.active,
            "buffered_slot": None if state.buffered is None else to_datetime(state.buffered),
            "fired": info.fired + state.fired,
            "skipped": info.skipped + state.skipped,
            "missed": info.missed + state.missed,
            "events": [*info.events, *state.events][-MAX_EVENTS:],
        }
        if state.last is not None:
            changes.update(
                last_slot=to_datetime(state.last[0]), last_run_id=state.last[1], last_fired_at=to_datetime(state.now)
            )
        state.info = info.model_copy(update=changes)
        wake = fire_at
        if more:
            wake = state.now
        elif state.buffered is not None:  # look again soon: the blocking run may end
            wake = min(wake, state.now + self.interval) if wake is not None else state.now + self.interval
        return state, wake

    def _finished(self, run_id: str) -> bool:
        status = self.store.run_status(run_id)
        return status is None or status.finished

    # -- background ------------------------------------------------------------------------
    def start(self) -> None:
        """Tick in a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.loop, name="autoflow-ticker", daemon=True)
        self._thread.start()

    def loop(self) -> None:
        """Tick until :meth:`stop`, sleeping until the next slot is due (at most ``interval``)."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the store may be briefly unreachable: try again soon
                log.warning("ticker pass failed", exc_info=True)
            self._stop.wait(self._delay())

    def _delay(self) -> float:
        if not self.holding:
            return self.interval
        try:
            wake = self.records.next_wake(SCHEDULE)
        except BackendError:
            return self.interval
        if wake is None:
            return self.interval
        return min(self.interval, max(0.001, wake - self.clock()))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        if self.holding:
            try:  # a standby ticker takes over at once
                self.store.release_slot(TICKER_SLOT, self.holder)
            except BackendError:
                log.debug("could not release the ticker lease", exc_info=True)
            self.holding = False


def fire_slot(starter: Starter, info: ScheduleInfo, slot: float, now: float, reason: str) -> str:
    """Start (or find) the run of one slot of a schedule; returns its id."""
    spec = spec_of(info)
    when = to_datetime(slot, info.timezone)
    inputs = dict(info.inputs)
    if info.slot_input:
        inputs[info.slot_input] = when.isoformat()
    fire_at = slot + spec.jitter_for(info.id, slot)
    data = {
        "schedule_id": info.id,
        "slot": slot_key(slot),
        "scheduled_for": when.isoformat(),
        "fire_at": to_datetime(fire_at, info.timezone).isoformat(),
        "fired_at": datetime.fromtimestamp(now, when.tzinfo).isoformat(),
        "reason": reason,
    }
    return start_run(
        starter,
        f"schedule:{info.id}:{slot_key(slot)}",
        info.workflow,
        inputs,
        trigger="schedule",
        trigger_data=data,
        priority=info.priority,
        user_id=info.user_id,
        organization_id=info.organization_id,
    )
