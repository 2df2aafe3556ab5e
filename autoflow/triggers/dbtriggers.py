"""Database-change triggers as a client sees them: ``client.db_triggers.activate(...)``.

Activating installs the outbox and the trigger in the watched database at once (changes
from then on are captured even before a listener runs) and stores the trigger's record;
a listener in ``autoflow scheduler`` (or an embedded client) then turns each change into
one run. Deactivating marks the record inactive and removes the trigger and its function
from the database (in a ``finally``, so a failure on the way never leaves them behind
unnoticed: it is raised and recorded in ``last_error``; call deactivate again).

Records never hold secrets: a URL with a password is refused. Give ``url_env=`` (the
name of an environment variable holding the URL, read where the trigger is activated
and where listeners run) or let libpq find the password (``PGPASSWORD``, ``~/.pgpass``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from autoflow import codec
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.errors import InputError, OutputError
from autoflow.models import DbTriggerInfo
from autoflow.store.base import Store
from autoflow.store.schedules import DB_TRIGGER
from autoflow.triggers.base import Resolve, Starter, TriggerBook, check_id, load, write
from autoflow.triggers.outbox import Event, Listeners, Source
from autoflow.triggers.postgres import PostgresSource
from autoflow.triggers.spec import to_datetime
from autoflow.triggers.sqlite_source import SQLiteSource

__all__ = ["KINDS", "OPERATIONS", "DbTriggers"]

KINDS = ("postgres", "sqlite")
OPERATIONS = ("INSERT", "UPDATE", "DELETE")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class DbTriggers(TriggerBook[DbTriggerInfo]):
    """The database-change triggers of one backend (``client.db_triggers``).

    Example::

        client.db_triggers.activate("on_order", table="orders", kind="postgres",
                                    url_env="SHOP_DB_URL", event_input="event")
        client.db_triggers.list()
        client.db_triggers.deactivate("on_order")
    """

    kind, model, label = DB_TRIGGER, DbTriggerInfo, "database trigger"

    def __init__(
        self,
        store: Store,
        starter: Starter,
        registry: WorkflowRegistry,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        super().__init__(store, starter, registry, clock=clock, resolve=resolve)
        self.environ = os.environ if environ is None else environ

    def activate(
        self,
        workflow: Workflow | str,
        *,
        table: str,
        kind: str = "postgres",
        url: str | None = None,
        url_env: str | None = None,
        schema: str = "public",
        operations: Iterable[str] = OPERATIONS,
        inputs: dict[str, Any] | None = None,
        event_input: str | None = None,
        priority: int = 0,
        user_id: str | None = None,
        organization_id: str | None = None,
        max_row_bytes: int = 8000,
        poll_interval: float = 1.0,
        id: str | None = None,
    ) -> DbTriggerInfo:
        """Install the trigger in the database and store it, active. Activating an id
        again re-installs it with the new settings (events not yet handled are kept)."""
        name = workflow.name if isinstance(workflow, Workflow) else workflow
        trigger_id = check_id(id or f"db_{codec.new_id()}", "trigger")
        wf = self.resolve(name, organization_id)  # NotFoundError lists the known ones
        if kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
        for what, value in (("table", table), ("schema", schema)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise InputError(f"{what} must be a plain SQL name (letters, digits, _), got {value!r}")
        ops = [str(op).upper() for op in operations]
        if not ops or not set(ops) <= set(OPERATIONS) or len(set(ops)) != len(ops):
            raise InputError(f"operations must be a non-empty subset of {OPERATIONS}, got {list(operations)!r}")
        if not isinstance(max_row_bytes, int) or not 64 <= max_row_bytes <= 1_000_000:
            raise InputError(f"max_row_bytes must be an int from 64 to 1000000, got {max_row_bytes!r}")
        if not isinstance(poll_interval, (int, float)) or not 0.01 <= poll_interval <= 3600:
            raise InputError(f"poll_interval must be seconds from 0.01 to 3600, got {poll_interval!r}")
        self._check_url(url, url_env, kind)
        try:
            values = codec.to_json_value(inputs or {}, where="inputs")
        except OutputError as exc:
            raise InputError(str(exc)) from None
        if event_input is not None and event_input not in wf.inputs:
            raise InputError(
                f"event_input {event_input!r} is not an input of workflow {name!r} ({', '.join(wf.inputs)})"
            )
        sample = Event(0, table, "INSERT", None, {}, False, 0.0).as_json(trigger_id)
        wf.validate_inputs({**values, **({event_input: sample} if event_input else {})})
        now = to_datetime(self.clock())
        existing = load(DbTriggerInfo, self.records.get_record(DB_TRIGGER, trigger_id))
        info = DbTriggerInfo(
            id=trigger_id,
            workflow=name,
            kind=kind,
            url=url,
            url_env=url_env,
            table=table,
            schema_name=schema,
            operations=ops,
            inputs=values,
            event_input=event_input,
            priority=priority,
            user_id=user_id,
            organization_id=organization_id,
            max_row_bytes=max_row_bytes,
            poll_interval=float(poll_interval),
            active=True,
            epoch=existing.epoch if existing is not None and existing.active else codec.new_id(),
            created_at=existing.created_at if existing else now,
            updated_at=now,
            events=existing.events if existing else 0,
            last_event_id=existing.last_event_id if existing else None,
            version=existing.version if existing else 0,
        )
        if existing is not None and existing.active and _place(existing) != _place(info):
            self._uninstall(existing)  # moved to another table or database: the old trigger goes
        source = self.open_source(info, listen=False)
        try:
            source.install()
        finally:
            source.close()
        if write(self.records, DB_TRIGGER, info, create=existing is None, wake_at=None) is None:
            raise InputError(f"trigger {trigger_id!r} was changed by someone else meanwhile; activate it again")
        return self.get(trigger_id)

    def deactivate(self, trigger_id: str) -> DbTriggerInfo:
        """Stop the trigger: no new runs; the database trigger, its function and its
        pending events are removed. BackendError if the database cannot be reached (the
        record says so in ``last_error``; call again)."""
        info = self.get(trigger_id)
        try:
            self._set(trigger_id, active=False)
        finally:
            try:
                self._uninstall(info)
            except Exception as exc:
                self._set(trigger_id, last_error=codec.redact_text(f"not removed from the database: {exc}")[:500])
                raise
        return self._set(trigger_id, last_error=None)

    def delete(self, trigger_id: str) -> None:
        """Deactivate (if active) and forget the trigger."""
        if self.get(trigger_id).active:
            self.deactivate(trigger_id)
        self.records.delete_record(DB_TRIGGER, trigger_id)

    # -- listeners -------------------------------------------------------------------------
    def open_source(self, info: DbTriggerInfo, *, listen: bool = True) -> Source:
        """A connected source for ``info`` (listening for wake-ups if ``listen``)."""
        url = self._url(info)
        if info.kind == "postgres":
            return PostgresSource(info, url, listen=listen)
        return SQLiteSource(info, url)

    def listeners(self, **options: Any) -> Listeners:
        """A :class:`Listeners` manager for these triggers (options: lease, interval, backoff)."""
        return Listeners(self.store, self.records, self.starter, self.open_source, **options)

    # -- internals -------------------------------------------------------------------------
    def _uninstall(self, info: DbTriggerInfo) -> None:
        source = self.open_source(info, listen=False)
        try:
            source.uninstall()
        finally:
            source.close()

    def _set(self, trigger_id: str, **changes: Any) -> DbTriggerInfo:
        for _ in range(20):
            info = self.get(trigger_id)
            made = info.model_copy(update={**changes, "updated_at": to_datetime(self.clock())})
            if write(self.records, DB_TRIGGER, made, create=False, wake_at=None) is not None:
                return self.get(trigger_id)
        raise InputError(f"trigger {trigger_id!r} kept changing under this update; try again")

    def _check_url(self, url: str | None, url_env: str | None, kind: str) -> None:
        if (url is None) == (url_env is None):
            raise InputError("give exactly one of url= (without a password) or url_env= (an environment variable name)")
        if url_env is not None:
            if not isinstance(url_env, str) or not _ENV.match(url_env):
                raise InputError(f"url_env must be an environment variable name, got {url_env!r}")
            if url_env not in self.environ:
                raise InputError(f"url_env: environment variable {url_env!r} is not set in this process")
            return
        if not isinstance(url, str) or not url:
            raise InputError(f"url must be a database URL, got {url!r}")
        if kind == "postgres" and (_has_password(url)):
            raise InputError(
                f"url {codec.redact_text(url)} holds a password, and trigger records never store secrets: "
                "put the URL in an environment variable and pass url_env='NAME', or use PGPASSWORD / ~/.pgpass"
            )

    def _url(self, info: DbTriggerInfo) -> str:
        if info.url_env:
            value = self.environ.get(info.url_env)
            if not value:
                raise InputError(f"trigger {info.id!r}: environment variable {info.url_env!r} is not set here")
            return value
        return info.url or ""


def _place(info: DbTriggerInfo) -> tuple[Any, ...]:
    """Where a trigger is installed."""
    return (info.kind, info.url, info.url_env, info.schema_name, info.table)


def _has_password(url: str) -> bool:
    if "://" in url:
        try:
            return urlsplit(url).password is not None or "password=" in url.lower()
        except ValueError:
            return True  # unparsable: refuse rather than store something odd
    return bool(re.search(r"(?i)\bpassword\s*=", url))
