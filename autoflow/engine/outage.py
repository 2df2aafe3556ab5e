"""Pacing and quieting the retries of a process whose store or queue is unreachable.

Every loop of a worker (queue consumers, the schedule poller, the heartbeat, the reaper)
keeps trying while Redis is down; left alone each would log a traceback several times a
second. They share one :class:`Outage` per backend instead: the first failure is logged
with its traceback, then one line per back-off step (0.5 s, 1 s, 2 s, ... up to 30 s
between attempts), and one line when the backend answers again.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Outage"]

log = logging.getLogger("autoflow.outage")


class Outage:
    """The shared state of one backend's outage, if any.

    Example::

        try:
            store.heartbeat(...)
        except BackendError as exc:
            stop_flag.wait(outage.failed(exc, "heartbeat"))
        else:
            outage.ok()
    """

    def __init__(self, url: str, *, base: float = 0.5, cap: float = 30.0) -> None:
        self.url = url
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._since: float | None = None
        self._step = 0
        self._next_log = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def delay(self) -> float:
        """Seconds to wait before the next attempt (0 while the backend is fine)."""
        with self._lock:
            if self._since is None:
                return 0.0
            return min(self.cap, self.base * 2.0 ** max(0, self._step - 1))

    def failed(self, exc: BaseException, where: str) -> float:
        """Note a failure of ``where``; returns how long to wait before trying again."""
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            first = self._since is None
            if self._since is None:
                self._since, self._step, self._next_log = now, 0, now
            since = self._since
            if now >= self._next_log:
                self._step += 1
                wait = min(self.cap, self.base * 2.0 ** (self._step - 1))
                self._next_log = now + wait
                if first:
                    log.warning("%s is unreachable (%s failed); retrying with back-off", self.url, where, exc_info=exc)
                else:
                    log.warning(
                        "%s still unreachable after %.0f s (%d failed attempts; %s: %s); next try in %.1f s",
                        self.url,
                        now - since,
                        self._failures,
                        type(exc).__name__,
                        exc,
                        wait,
                    )
                return wait
            return min(self.cap, self.base * 2.0 ** max(0, self._step - 1))

    def ok(self) -> None:
        """The backend answered: end the outage (logged once)."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            log.warning("%s is reachable again after %.1f s", self.url, time.monotonic() - self._since)
            self._since, self._step, self._failures = None, 0, 0
