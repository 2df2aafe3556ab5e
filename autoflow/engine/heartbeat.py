"""One heartbeat thread per process: renews the leases of running nodes, flushes their
logs, and tells them when their run is cancelled or their claim was lost.

It is also the watchdog of nodes that ignore cancellation: a node still running
``grace`` seconds after its run was cancelled is recorded as cancelled from here (its
worker thread stays busy until the function returns; what it returns is then refused).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoflow import codec
from autoflow.context import LogBuffer
from autoflow.engine.outage import Outage
from autoflow.errors import BackendError
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
    cancelled_at: float | None = None
    abandoned: bool = False


class LeaseTracker:
    """Keeps the claims of this process alive.

    Every ``interval`` seconds: append buffered log lines, extend every lease, and for
    runs being cancelled (or claims another worker took over) set the node's cancel
    event and interrupt it.
    """

    def __init__(
        self,
        store: Store,
        lease: float,
        interval: float = 0.5,
        *,
        on_stuck: Callable[[str, str, str], None] | None = None,
        grace: float = 0.4,
        outage: Outage | None = None,
    ) -> None:
        self.outage = outage
        self._store = store
        self._lease = lease
        self._on_stuck = on_stuck
        self._grace = grace
        self._interval = min(interval, lease / 3)
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], _Tracked] = {}
        self._orphans: list[tuple[str, str, threading.Event]] = []  # slots of abandoned calls
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
        self._ensure_thread()

    def hold_slot(self, run_id: str, node_id: str, key: str) -> None:
        """Renew the concurrency slot ``key`` with this claim's lease."""
        with self._lock:
            tracked = self._claims.get((run_id, node_id))
            if tracked is not None:
                tracked.slot = key

    def hold_until(self, key: str, holder: str, done: threading.Event) -> None:
        """Keep the concurrency slot ``(key, holder)`` of a call that outlived its claim (a
        thread worker cannot stop a timed-out function) until ``done`` is set, then free it:
        a slot is never given to another node while its function still runs."""
        with self._lock:
            self._orphans.append((key, holder, done))
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._pid == codec.current_pid():  # the thread runs already (checked again under the lock)
            return
        with self._lock:
            if self._pid != codec.current_pid():  # first use in this process (or after a fork)
                self._pid = codec.current_pid()
                self._stop = threading.Event()
                threading.Thread(target=self._loop, name="autoflow-heartbeat", daemon=True).start()

    def untrack(self, run_id: str, node_id: str) -> bool:
        """Stop tracking; True if the claim was lost or settled by the watchdog meanwhile."""
        with self._lock:
            tracked = self._claims.pop((run_id, node_id), None)
        return bool(tracked and (tracked.lost or tracked.abandoned))

    def stop(self) -> None:
        self._stop.set()

    def _beat_orphans(self) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, []
        if not orphans:
            return
        running = [(key, holder, done) for key, holder, done in orphans if not done.is_set()]
        for key, holder, done in orphans:
            if done.is_set():
                self._store.release_slot(key, holder)
        if running:
            self._store.renew_slots([(key, holder) for key, holder, _ in running], self._lease)
        with self._lock:
            self._orphans.extend(running)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except BackendError as exc:  # unreachable: leases may lapse (the reaper re-runs those nodes)
                if self.outage is None:
                    log.warning("heartbeat failed: %s", exc)
                else:
                    self.outage.failed(exc, "the heartbeat")
            except Exception:  # a bug must not kill the thread
                log.exception("heartbeat failed")

    def beat(self) -> None:
        self._beat_orphans()
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
        now = time.monotonic()
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
                if tracked.cancelled_at is None:
                    tracked.cancelled_at = now
            stuck = tracked.cancelled_at is not None and now - tracked.cancelled_at >= self._grace
            if stuck and not tracked.lost and not tracked.abandoned and self._on_stuck is not None:
                tracked.abandoned = True
                self._on_stuck(key[0], key[1], tracked.token)
