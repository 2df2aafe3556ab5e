"""Database-change triggers: an outbox in the user's database, drained into runs.

A trigger in the watched database writes each changed row (operation, old and new row,
bounded in size) into an outbox table *in the same transaction* as the change: a
rolled-back change leaves no event, a committed one always does. A :class:`Listener`
reads the outbox oldest first, starts one run per event under the idempotency key
``db:<trigger>:<epoch>:<event id>``, then deletes the events it handled. A wake-up (a
PostgreSQL NOTIFY) only makes it look sooner; it also looks every ``poll_interval``.

Why the outbox is consumed by deleting, not by an id watermark: event ids are taken when
a row is written, and transactions commit out of order. A transaction that wrote event 10
and commits after the one that wrote event 11 would be skipped by a reader already past
11. Deleted-when-done events cannot be skipped, and a crash between starting the runs and
deleting the events only repeats keys that return the runs already started. The highest
id handled is still recorded (``last_event_id``) for the record.

:class:`Listeners` runs one listener per active trigger in whichever process holds that
trigger's lease in the store, so several ``autoflow scheduler`` replicas share them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autoflow import codec
from autoflow.errors import AutoflowError, BackendError, InputError
from autoflow.models import DbTriggerInfo
from autoflow.store.base import Store
from autoflow.store.schedules import DB_TRIGGER, TriggerStore
from autoflow.triggers.base import Starter, load, start_run, write
from autoflow.triggers.spec import to_datetime

__all__ = ["Event", "Listener", "Listeners", "Source", "SourceFactory"]

log = logging.getLogger("autoflow.dbtriggers")
BATCH = 500
#: Reconnection backoff: first delay, factor, cap (seconds).
BACKOFF = (0.1, 2.0, 30.0)


@dataclass(frozen=True)
class Event:
    """One change read from the outbox."""

    id: int
    table: str
    op: str  # INSERT, UPDATE or DELETE
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    truncated: bool
    at: float

    def as_json(self, trigger_id: str) -> dict[str, Any]:
        return {
            "trigger_id": trigger_id,
            "event_id": self.id,
            "table": self.table,
            "op": self.op,
            "old": self.old,
            "new": self.new,
            "truncated": self.truncated,
            "at": to_datetime(self.at).isoformat(),
        }


class Source(Protocol):
    """The outbox of one trigger in one database (PostgreSQL or SQLite)."""

    def install(self) -> None:
        """Create the outbox, the trigger function and the trigger (idempotent)."""

    def uninstall(self) -> None:
        """Drop the trigger and its function, and delete the trigger's pending events."""

    def fetch(self, limit: int) -> list[Event]:
        """The oldest pending events, at most ``limit``."""

    def delete(self, ids: Sequence[int]) -> None:
        """Forget handled events."""

    def wait(self, timeout: float) -> bool:
        """Block until woken (a NOTIFY: True) or ``timeout`` seconds (False)."""

    def close(self) -> None:
        """Release the connection (idempotent)."""


#: Opens the source of a trigger (connected; listening where the database can wake us).
SourceFactory = Callable[[DbTriggerInfo], Source]


class Listener:
    """Drains one trigger's outbox into runs until stopped; reconnects with backoff.

    Example::

        listener = Listener(info, records, client, open_source)
        listener.start(); ...; listener.stop()
    """

    def __init__(
        self,
        info: DbTriggerInfo,
        records: TriggerStore,
        starter: Starter,
        open_source: SourceFactory,
        *,
        backoff: tuple[float, float, float] = BACKOFF,
    ) -> None:
        self.info = info
        self.records = records
        self.starter = starter
        self.open_source = open_source
        self.backoff = backoff
        self.connects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: Source | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"autoflow-listener-{self.info.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "trigger %s: listener still busy after %.0fs; it stops after its batch", self.info.id, timeout
                )

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            source: Source | None = None
            try:
                source = self.open_source(self.info)
                self.connects += 1
                delay = self.backoff[0]
                while not self._stop.is_set():
                    if not self.drain(source):
                        self._idle(source)
            except Exception as exc:  # connection lost, database or store down: retry
                message = codec.redact_text(f"{type(exc).__name__}: {exc}")[:500]
                log.warning("trigger %s: %s; reconnecting in %.1fs", self.info.id, message, delay)
                self._note_error(message)
                self._stop.wait(delay)
                delay = min(delay * self.backoff[1], self.backoff[2])
            finally:
                if source is not None:
                    source.close()

    def _idle(self, source: Source) -> None:
        """Wait for a wake-up until the next poll, noticing stop() within 0.25 s."""
        deadline = time.monotonic() + self.info.poll_interval
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or source.wait(min(left, 0.25)):
                return

    def drain(self, source: Source) -> int:
        """Start the runs of the pending events (one batch) and delete them; how many.

        An event the workflow refuses as input (InputError: it can never start) is
        dropped and named in ``last_error``; any other failure (the store, an unknown
        workflow) leaves the batch in the outbox to be retried."""
        events = source.fetch(BATCH)
        if not events:
            return 0
        info = self.info
        refused: list[str] = []
        for event in events:
            data = event.as_json(info.id)
            inputs = dict(info.inputs)
            if info.event_input:
                inputs[info.event_input] = data
            try:
                self._start(event, inputs, data)
            except InputError as exc:
                reason = codec.redact_text(str(exc))[:200]
                log.error("trigger %s: event %d dropped, the workflow refuses it: %s", info.id, event.id, reason)
                refused.append(f"event {event.id}: {reason}")
        source.delete([e.id for e in events])
        self._note_events(len(events), max(e.id for e in events), "; ".join(refused)[:500] or None)
        return len(events)

    def _start(self, event: Event, inputs: dict[str, Any], data: dict[str, Any]) -> None:
        info = self.info
        start_run(
            self.starter,
            f"db:{info.id}:{info.epoch}:{event.id}",
            info.workflow,
            inputs,
            trigger="database",
            trigger_data=data,
            priority=info.priority,
            user_id=info.user_id,
            organization_id=info.organization_id,
        )

    def _note_events(self, count: int, last: int, error: str | None) -> None:
        self._update(
            lambda i: {
                "events": i.events + count,
                "last_event_id": max(last, i.last_event_id or 0),
                "last_error": error,
            }
        )

    def _note_error(self, message: str) -> None:
        with contextlib.suppress(BackendError):  # the store failed: the log line is all we can leave
            self._update(lambda i: {"last_error": message})

    def _update(self, changes: Callable[[DbTriggerInfo], dict[str, Any]]) -> None:
        for _ in range(10):
            current = load(DbTriggerInfo, self.records.get_record(DB_TRIGGER, self.info.id))
            if current is None or current.epoch != self.info.epoch:
                return  # deleted or re-activated meanwhile: not ours to write
            if (
                write(self.records, DB_TRIGGER, current.model_copy(update=changes(current)), create=False, wake_at=None)
                is not None
            ):
                return


class Listeners:
    """Keeps one :class:`Listener` per active trigger this process holds the lease of.

    Example::

        listeners = Listeners(store, records, client, open_source)
        listeners.start()      # checks the triggers every ``interval`` seconds
        listeners.stop()
    """

    def __init__(
        self,
        store: Store,
        records: TriggerStore,
        starter: Starter,
        open_source: SourceFactory,
        *,
        lease: float = 10.0,
        interval: float = 1.0,
        holder: str | None = None,
        backoff: tuple[float, float, float] = BACKOFF,
    ) -> None:
        self.store = store
        self.records = records
        self.starter = starter
        self.open_source = open_source
        self.lease = lease
        self.interval = interval
        self.backoff = backoff
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.running: dict[str, tuple[int, Listener]] = {}  # trigger id -> (record version seen, listener)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """One look: start listeners of new triggers, stop those of deactivated ones."""
        active = {}
        for got in self.records.list_records(DB_TRIGGER):
            info = load(DbTriggerInfo, got)
            if info is not None and info.active:
                active[info.id] = info
        for trigger_id in list(self.running):
            info = active.get(trigger_id)
            _, listener = self.running[trigger_id]
            if info is None or _config(info) != _config(listener.info) or not listener.alive:
                self._drop(trigger_id)  # gone, re-activated with other settings, or crashed
        for trigger_id, info in active.items():
            if not self.store.acquire_slot(_slot(trigger_id), self.holder, 1, self.lease):
                if trigger_id in self.running:  # our lease expired and another process took it
                    self._drop(trigger_id, release=False)
                continue
            if trigger_id not in self.running:
                listener = Listener(info, self.records, self.starter, self.open_source, backoff=self.backoff)
                listener.start()
                self.running[trigger_id] = (info.version, listener)
                log.info("trigger %s: listening (%s %s)", trigger_id, info.kind, info.table)

    def _drop(self, trigger_id: str, *, release: bool = True) -> None:
        _, listener = self.running.pop(trigger_id)
        listener.stop()
        if release:
            self.store.release_slot(_slot(trigger_id), self.holder)
        log.info("trigger %s: stopped listening", trigger_id)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.loop, name="autoflow-listeners", daemon=True)
        self._thread.start()

    def loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the store may be briefly unreachable: look again soon
                log.warning("checking database triggers failed", exc_info=True)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        for trigger_id in list(self.running):
            try:
                self._drop(trigger_id)
            except AutoflowError:
                log.debug("could not release trigger %s", trigger_id, exc_info=True)


def _config(info: DbTriggerInfo) -> dict[str, Any]:
    """What a listener was started with (not the counters it updates itself)."""
    return info.model_dump(exclude={"events", "last_event_id", "last_error", "updated_at", "version"})


def _slot(trigger_id: str) -> str:
    return f"autoflow:dbtrigger:{trigger_id}"
