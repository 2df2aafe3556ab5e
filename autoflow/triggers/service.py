"""The scheduler service: the ticker and the database listeners of one process.

``autoflow scheduler MODULE...`` runs it in the foreground; an embedded ``af.Client()``
runs it in background threads while its workers run. Any number of processes may run
it: one ticker acts at a time (a lease), each database trigger is listened to by one
process at a time (a lease per trigger), and every run is started under a unique key.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from autoflow.define.workflow import WorkflowRegistry
from autoflow.errors import AutoflowError
from autoflow.store.base import Store
from autoflow.triggers.base import Starter
from autoflow.triggers.dbtriggers import DbTriggers
from autoflow.triggers.schedules import Schedules

__all__ = ["TriggerService"]

log = logging.getLogger("autoflow.scheduler")


class TriggerService:
    """Ticker + listeners over one store.

    Example::

        service = TriggerService(store, client, registry, lease=10.0)
        service.start()    # background threads (an embedded client)
        service.run()      # foreground until SIGTERM/SIGINT (`autoflow scheduler`)
        service.stop()
    """

    def __init__(
        self,
        store: Store,
        starter: Starter,
        registry: WorkflowRegistry,
        *,
        lease: float = 10.0,
        interval: float = 1.0,
        sync: bool = True,
        resync: float = 30.0,
        schedules: Schedules | None = None,
        db_triggers: DbTriggers | None = None,
    ) -> None:
        self.schedules = schedules or Schedules(store, starter, registry)
        self.db_triggers = db_triggers or DbTriggers(store, starter, registry)
        self.ticker = self.schedules.ticker(lease=lease, interval=interval)
        self.listeners = self.db_triggers.listeners(lease=lease, interval=interval)
        self.sync = sync
        self.resync = resync
        self._stopped = threading.Event()
        self._syncer: threading.Thread | None = None

    def start(self) -> None:
        """Sync the registry's decorator schedules, then tick and listen in threads (and
        sync again every ``resync`` seconds: workflows defined later, e.g. in a notebook)."""
        self._stopped.clear()
        if self.sync:
            self._sync()
            if self.resync > 0:
                self._syncer = threading.Thread(target=self._sync_loop, name="autoflow-schedule-sync", daemon=True)
                self._syncer.start()
        self.ticker.start()
        self.listeners.start()

    def _sync(self) -> None:
        try:
            synced = self.schedules.sync()
            log.debug("decorator schedules: %s", ", ".join(s.id for s in synced) or "none")
        except AutoflowError as exc:  # a clash must not keep the other schedules from firing
            log.error("could not sync decorator schedules: %s", exc)

    def _sync_loop(self) -> None:
        while not self._stopped.wait(self.resync):
            self._sync()

    def run(self) -> None:
        """Start, then block until SIGTERM or SIGINT; stop cleanly."""
        previous: dict[signal.Signals, Any] = {}

        def stop(signum: int, frame: Any) -> None:
            self._stopped.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
        try:
            self.start()
            self._stopped.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        self._stopped.set()
        if self._syncer is not None:
            self._syncer.join(5.0)
            self._syncer = None
        self.ticker.stop()
        self.listeners.stop()
