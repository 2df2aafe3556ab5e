"""What every trigger shares: how it starts a run, and how records are read and written.

Triggers sit below the client: they start runs through a :class:`Starter`, which
``af.Client`` satisfies (its ``execute`` and ``cancel``). A run is started under an
idempotency key that names its cause (``schedule:<id>:<slot>``, ``db:<id>:<event>``), so
starting it twice returns the first run.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from autoflow import codec
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.errors import InputError, NotFoundError
from autoflow.models import DbTriggerInfo, RunStatus, ScheduleInfo
from autoflow.store.base import Store
from autoflow.store.schedules import TriggerStore, trigger_store

__all__ = [
    "ID_PATTERN",
    "StartedRun",
    "Starter",
    "TriggerBook",
    "check_id",
    "load",
    "start_run",
    "ts",
    "write",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
M = TypeVar("M", ScheduleInfo, DbTriggerInfo)


class StartedRun(Protocol):
    """What a starter returns: something with the run's id (an ``af.Run``)."""

    @property
    def id(self) -> str: ...


#: Finds the workflow a trigger names: ``(name, organization_id) -> Workflow``; the client
#: offers one that knows workflows stored by id too.
Resolve = Callable[[str, "str | None"], Workflow]


class Starter(Protocol):
    """How triggers start and cancel runs; ``af.Client`` is one.

    Example::

        ticker = Ticker(client.backend.store, records, starter=client)
    """

    def execute(
        self,
        workflow: str,
        inputs: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        user_id: str | None = None,
        organization_id: str | None = None,
        trigger_data: Any = None,
        trigger: str | None = None,
        idempotency_key: str | None = None,
    ) -> StartedRun: ...

    def cancel(self, run_id: str) -> RunStatus: ...


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InputError(f"{what} id must match {ID_PATTERN.pattern}, got {value!r}")
    return value


def ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def load(model: type[M], got: tuple[str, int] | None) -> M | None:
    """A record as its model (with the store's version), or None."""
    if got is None:
        return None
    body, version = got
    return model.model_validate({**codec.loads(body), "version": version})


def write(
    records: TriggerStore, kind: str, info: ScheduleInfo | DbTriggerInfo, *, create: bool, wake_at: float | None
) -> int | None:
    """CAS-write ``info`` (its ``version`` is the one read); the new version or None."""
    body = codec.dumps(info.model_dump(mode="json", exclude={"version"}))
    return records.put_record(kind, info.id, body, version=None if create else info.version, wake_at=wake_at)


class TriggerBook(Generic[M]):
    """The records of one kind of trigger in one store, and what starts their runs: what
    ``client.schedules`` and ``client.db_triggers`` share. ``kind`` is the record kind,
    ``model`` its model and ``label`` how errors name one."""

    kind: str
    model: type[M]
    label: str

    def __init__(
        self,
        store: Store,
        starter: Starter,
        registry: WorkflowRegistry,
        *,
        clock: Callable[[], float] = time.time,
        resolve: Resolve | None = None,
    ) -> None:
        self.store = store
        self.starter = starter
        self.registry = registry
        # Workflow names resolve like Client.execute: a stored workflow of the organization
        # first (when the client offers it), else a registered one.
        self.resolve: Resolve = resolve or (lambda name, organization_id: registry.workflow(name))
        self.clock = clock
        self.records: TriggerStore = trigger_store(store)

    def get(self, record_id: str) -> M:
        """The record ``record_id``; NotFoundError naming it if absent."""
        info = load(self.model, self.records.get_record(self.kind, record_id))
        if info is None:
            raise NotFoundError(f"no {self.label} {record_id!r} on {self.store.url}")
        return info

    def list(self, workflow: str | None = None, organization_id: str | None = None) -> builtins.list[M]:
        """Every record (of one workflow / organization), by id."""
        out = []
        for got in self.records.list_records(self.kind):
            info = load(self.model, got)
            if info is None or (workflow and info.workflow != workflow):
                continue
            if organization_id and info.organization_id != organization_id:
                continue
            out.append(info)
        return out


def start_run(
    starter: Starter,
    key: str,
    workflow: str,
    inputs: dict[str, Any],
    *,
    trigger: str,
    trigger_data: dict[str, Any],
    priority: int = 0,
    user_id: str | None = None,
    organization_id: str | None = None,
) -> str:
    """Start the run of ``key`` (or get the one it already started) and return its id.

    The store creates at most one run per idempotency key, atomically (one SQLite
    transaction; one Redis script keyed by the idempotency key), so starters racing on
    one key get the same run (``test_tickers_racing_without_a_lease_...`` checks it)."""
    run = starter.execute(
        workflow,
        inputs,
        priority=priority,
        user_id=user_id,
        organization_id=organization_id,
        trigger=trigger,
        trigger_data=trigger_data,
        idempotency_key=key,
    )
    return run.id
