"""One heartbeat thread per process: renews the leases of running nodes, flushes their
logs, and tells them when their run is cancelled or their claim was lost."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from autoflow.context import LogBuffer
from autoflow.store.base import Store

__all__ = ["LeaseTracker"]

log = logging.getLogger("autoflow.heartbeat")


@dataclass
class _Tracked:
    token: str
    cancel: threading.Event
    logs: LogBuffer
    interrupt: Callable[[], None]
    lost: bool = False
    slot: str | None = None  # a concurrency slot held while the node runs


class LeaseTracker:
    """Keeps the claims of this process alive.

    Every ``interval`` seconds: append buffered log lines, extend every lease, and for
    runs being cancelled (or claims another worker took over) set the node's cancel
    event and interrupt it.
    """

    def __init__(self, store: Store, lease: float, interval: float = 0.5) -> None:
        self._store = store
        self._lease = lease
        self._interval = min(interval, lease / 3)
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], _Tracked] = {}
        self._pid: int | None = None
        self._stop = threading.Event()

    def track(
        self,
        run_id: str,
        node_id: str,
        token: str,
        cancel: threading.Event,
        logs: LogBuffer,
        interrupt: Callable[[], None],
    ) -> None:
        with self._lock:
            self._claims[(run_id, node_id)] = _Tracked(token, cancel, logs, interrupt)
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                self._stop = threading.Event()
                threading.Thread(target=self._loop, name="autoflow-heartbeat", daemon=True).start()

    def hold_slot(self, run_id: str, node_id: str, key: str) -> None:
        """Renew the concurrency slot ``key`` with this claim's lease."""
        with self._lock:
            tracked = self._claims.get((run_id, node_id))
            if tracked is not None:
                tracked.slot = key

    def untrack(self, run_id: str, node_id: str) -> bool:
        """Stop tracking; True if the claim was reported lost meanwhile."""
        with self._lock:
            tracked = self._claims.pop((run_id, node_id), None)
        return bool(tracked and tracked.lost)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception:  # a store hiccup must not kill the thread; the lease may lapse
                log.warning("heartbeat failed; retrying in %.1fs", self._interval, exc_info=True)

    def beat(self) -> None:
        with self._lock:
            claims = dict(self._claims)
        if not claims:
            return
        for (run_id, _node_id), tracked in claims.items():
            records = tracked.logs.drain()
            if records:
                self._store.append_logs(run_id, records)
        result = self._store.heartbeat([(r, n, t.token) for (r, n), t in claims.items()], self._lease)
        slots = [(t.slot, t.token) for t in claims.values() if t.slot]
        if slots:
            self._store.renew_slots(slots, self._lease)
        for key, tracked in claims.items():
            with self._lock:
                if self._claims.get(key) is not tracked:
                    continue  # finished while we were beating: nothing was lost
            lost = key in result.lost
            if lost or key[0] in result.cancelled:
                if lost and not tracked.lost:
                    log.warning("lost the claim on %s/%s (lease expired); abandoning it", *key)
                tracked.lost = tracked.lost or lost
                if not tracked.cancel.is_set():
                    tracked.cancel.set()
                    tracked.interrupt()
