"""Immediate mode: messages run synchronously in the caller's thread.

``af.Client(immediate=True)`` pairs this with an in-memory SQLite store, so a workflow
runs to the end inside ``execute`` on the production code path, with no Huey consumer.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoflow.store.base import Ready

__all__ = ["InlineDispatcher"]


class InlineDispatcher:
    """A priority queue with etas, drained by :meth:`drain`."""

    url = "memory://"

    def __init__(self) -> None:
        self.node_handler: Callable[[str, str, int], None] | None = None
        self.admit_handler: Callable[[], None] | None = None
        self._heap: list[tuple[float, int, int, Ready | None]] = []
        self._seq = itertools.count()

    def send(self, items: Sequence[Ready]) -> None:
        for item in items:
            heapq.heappush(self._heap, (item.eta or 0.0, -item.priority, next(self._seq), item))

    def queue_commands(self, items: Sequence[Ready], server: tuple[Any, ...]) -> None:
        """Not a Redis queue: messages go through :meth:`send`."""
        return None

    def nudge(self, priority: int = 0) -> None:
        heapq.heappush(self._heap, (0.0, -priority, next(self._seq), None))

    def backlog(self) -> int:
        return sum(1 for *_, item in self._heap if item is not None)

    def drain(self, done: Callable[[], bool]) -> None:
        """Handle messages (sleeping until etas) until ``done()`` or nothing is left."""
        while self._heap and not done():
            eta, _, _, item = heapq.heappop(self._heap)
            delay = eta - time.time()
            if delay > 0:
                time.sleep(delay)
            if item is None:
                if self.admit_handler:
                    self.admit_handler()
            elif self.node_handler:
                self.node_handler(item.run_id, item.node_id, item.attempt)

    def close(self) -> None:
        self._heap.clear()
