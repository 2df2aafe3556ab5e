"""Where schedules and database triggers are kept: small versioned records in the store.

A record is JSON text (a ``ScheduleInfo`` or ``DbTriggerInfo`` dump) under ``(kind, id)``
with a version the store assigns. Every write is a compare-and-set on that version, so the
ticker and a client editing the same schedule never overwrite each other: the loser
reads again and retries. Schedules also sit in a *wake index* (``wake_at``, unix seconds):
the ticker asks for the records due now instead of scanning them all.

Two implementations beside the run stores, over the same connection:
:class:`~autoflow.store.schedules_sqlite.SQLiteTriggerStore` and
:class:`~autoflow.store.schedules_redis.RedisTriggerStore`.
"""

from __future__ import annotations

from typing import Protocol

from autoflow.store.base import Store
from autoflow.store.redis import RedisStore
from autoflow.store.schedules_redis import RedisTriggerStore
from autoflow.store.schedules_sqlite import SQLiteTriggerStore
from autoflow.store.sqlite import SQLiteStore

__all__ = ["DB_TRIGGER", "SCHEDULE", "TriggerStore", "trigger_store"]

#: Record kinds.
SCHEDULE = "schedule"
DB_TRIGGER = "dbtrigger"


class TriggerStore(Protocol):
    """Versioned trigger records with a wake index. Each method is atomic."""

    def put_record(self, kind: str, id: str, body: str, *, version: int | None, wake_at: float | None) -> int | None:
        """Write a record. ``version=None`` creates it (None if ``id`` exists already);
        otherwise it is replaced only if its stored version is still ``version`` (None
        if not: someone else wrote first). Returns the new version. ``wake_at`` puts the
        record in the wake index (None takes it out)."""

    def get_record(self, kind: str, id: str) -> tuple[str, int] | None:
        """``(body, version)`` of a record, or None."""

    def list_records(self, kind: str) -> list[tuple[str, int]]:
        """Every record of ``kind`` as ``(body, version)``, ordered by id."""

    def delete_record(self, kind: str, id: str) -> bool:
        """Remove a record; False if there was none."""

    def due_records(self, kind: str, now: float, limit: int) -> list[str]:
        """Ids of records whose ``wake_at <= now``, earliest first, at most ``limit``."""

    def next_wake(self, kind: str) -> float | None:
        """The earliest ``wake_at`` of the index, or None when it is empty."""


def trigger_store(store: Store) -> TriggerStore:
    """The trigger records kept beside ``store`` (SQLite or Redis), on its connection."""
    if isinstance(store, SQLiteStore):
        return SQLiteTriggerStore(store)
    if isinstance(store, RedisStore):
        return RedisTriggerStore(store)
    raise TypeError(f"no trigger store for a {type(store).__name__}")
