"""Pure rules of the engine: when a node becomes ready or skipped, how a run ends,
how long to wait before a retry. No I/O here; both stores apply these rules (the Redis
store mirrors :func:`decide` in Lua, and the contract tests hold the two together).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

from autoflow.models import RunStatus
from autoflow.node import NodeOptions

__all__ = ["Decision", "Rule", "decide", "final_status", "message_priority", "retry_delay"]


class Rule(str, enum.Enum):
    """Trigger rules (Airflow's names): when may a node run, given its parents' outcomes."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ALL_FAILED = "all_failed"
    NONE_FAILED = "none_failed"


class Decision(enum.Enum):
    WAIT = "wait"
    READY = "ready"
    SKIP = "skip"


def decide(rule: Rule | str, total: int, ok: int, failed: int, skipped: int) -> Decision:
    """Decide a node's fate from its parents' outcomes so far.

    ``total`` parents, of which ``ok`` completed, ``failed`` failed and ``skipped`` were
    skipped. A decision is taken as soon as it is certain, so no join waits forever.
    """
    rule = Rule(rule)
    done = ok + failed + skipped
    if done > total or min(total, ok, failed, skipped) < 0:
        raise ValueError(f"inconsistent tallies: total={total} ok={ok} failed={failed} skipped={skipped}")
    all_done = done == total
    if rule is Rule.ALL_SUCCESS:
        if failed or skipped:
            return Decision.SKIP
        return Decision.READY if all_done else Decision.WAIT
    if rule is Rule.ALL_DONE:
        return Decision.READY if all_done else Decision.WAIT
    if rule is Rule.ONE_SUCCESS:
        if ok:
            return Decision.READY
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is Rule.ONE_FAILED:
        if failed:
            return Decision.READY
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is Rule.ALL_FAILED:
        if ok or skipped:
            return Decision.SKIP
        return Decision.READY if all_done else Decision.WAIT
    # NONE_FAILED
    if failed:
        return Decision.SKIP
    return Decision.READY if all_done else Decision.WAIT


def final_status(cancel_requested: bool, failed: int) -> RunStatus:
    """How a run ends once none of its nodes can change any more."""
    if cancel_requested:
        return RunStatus.CANCELLED
    return RunStatus.FAILED if failed else RunStatus.COMPLETED


def message_priority(run_priority: int, node_priority: int) -> int:
    """A node's queue priority: its run's priority plus its own (higher runs first)."""
    return run_priority + node_priority


def retry_delay(
    options: NodeOptions, attempt: int, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds before the next attempt after attempt ``attempt`` failed, or None if the
    node has no attempts left."""
    if attempt >= options.max_attempts:
        return None
    return options.backoff.delay(attempt, rand)
