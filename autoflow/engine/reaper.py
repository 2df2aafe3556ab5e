"""The reaper: re-drives nodes whose worker died or whose message was lost.

Any worker may run it; every action is an atomic, idempotent store transition, so
several reapers at once do no harm.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from autoflow.engine.outage import Outage
from autoflow.errors import BackendError
from autoflow.store.base import Ready, Store

__all__ = ["REAPER_SLOT", "Reaper"]

log = logging.getLogger("autoflow.reaper")
REAPER_SLOT = "autoflow:reaper"


class Reaper:
    """Periodically: recover expired leases and lost messages, admit pending runs,
    purge runs past retention."""

    def __init__(
        self,
        store: Store,
        send: Callable[[Sequence[Ready]], None],
        admit: Callable[[], None],
        backlog: Callable[[], int],
        recover: Callable[[], None] = lambda: None,
        *,
        lease: float,
        requeue_after: float,
        max_stalls: int,
        retention: float,
        purge_every: float = 300.0,
        outage: Outage | None = None,
    ) -> None:
        self.outage = outage
        self.store = store
        self.send = send
        self.admit = admit
        self.backlog = backlog
        self.recover = recover
        self.requeue_after = requeue_after
        self.max_stalls = max_stalls
        self.retention = retention
        # Recovery takes a lease (or requeue_after) plus one interval: a fifth of it keeps
        # that close to the lease while costing little (one reaper runs at a time anyway).
        self.interval = max(0.2, min(lease, requeue_after) / 5)
        self._purge_every = purge_every
        self._next_purge = 0.0
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> int:
        """One pass; returns how many messages were re-sent. One reaper works at a time
        across all workers (a leased slot); the others take over if it dies."""
        if not self.store.acquire_slot(REAPER_SLOT, self._holder, 1, self.interval * 3):
            return 0
        now = time.time() if now is None else now
        # Nodes waiting in the store beyond the messages in the queue had their message
        # lost (a sender or a popping worker died): re-send that many, oldest first. A long
        # backlog is not mistaken for losses, and duplicates are harmless anyway.
        backlog = self.backlog()  # first: what is consumed meanwhile then only lowers the budget
        budget = max(0, self.store.count_waiting() - backlog)
        ready = self.store.reap(now, self.requeue_after, self.max_stalls, budget)
        if ready:
            log.warning("re-sending %d node message(s) (lost worker or lost message)", len(ready))
            self.send(ready)
        self.recover()
        self.admit()
        if now >= self._next_purge:
            self._next_purge = now + self._purge_every
            purged = self.store.purge(now, self.retention)
            if purged:
                log.info("purged %d run(s) past retention", purged)
        return len(ready)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="autoflow-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:  # let another worker take over at once
            self.store.release_slot(REAPER_SLOT, self._holder)
        except Exception:  # the store may be gone already; the slot then just expires
            log.debug("could not release the reaper slot", exc_info=True)

    def _loop(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                self.tick()
            except BackendError as exc:  # unreachable: pace the retries, say it once per step
                if self.outage is None:
                    log.warning("reaper pass failed: %s", exc)
                else:
                    wait = max(wait, self.outage.failed(exc, "the reaper"))
            except Exception:  # a bug must not kill the thread; try again next tick
                log.exception("reaper pass failed")
            else:
                if self.outage is not None:
                    self.outage.ok()
