"""The store transition that records a node's outcome, as every step of the executor returns it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoflow.store.base import Progress

__all__ = ["Settle", "once"]


@dataclass(frozen=True)
class Settle:
    """The store transition that records a node's outcome, run once the node let go of its
    lease; given a token, a completion may claim the next ready node with it (a
    continuation). ``outcome`` names it for the observer (see ``engine/observe.py``)."""

    outcome: str
    transition: Callable[[str | None], Progress]

    def __call__(self, next_token: str | None) -> Progress:
        return self.transition(next_token)


def once(outcome: str, fn: Callable[..., Progress], *args: Any) -> Settle:
    """A transition that never continues with another node (it ignores the token)."""
    return Settle(outcome, lambda _next_token: fn(*args))
