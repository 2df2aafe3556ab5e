"""The trigger rules both stores apply: when a node becomes ready or skipped, what a
skipped node tells its children, how a run ends, a message's priority. Pure functions; the
Redis store mirrors :func:`decide` in Lua (lua/lib_flow.lua) and the contract tests hold the two
together.
"""

from __future__ import annotations

import enum

from autoflow.models import RunStatus, TriggerRule

__all__ = [
    "HANDLER_RULES",
    "Decision",
    "Rule",
    "decide",
    "final_status",
    "message_priority",
    "skip_outcome",
]


Rule = TriggerRule


class Decision(enum.Enum):
    WAIT = "wait"
    READY = "ready"
    SKIP = "skip"


def decide(rule: Rule | str, total: int, ok: int, failed: int, skipped: int) -> Decision:
    """Decide a node's fate from its parents' outcomes so far.

    ``total`` parents, of which ``ok`` completed, ``failed`` failed (or were skipped
    because of a failure upstream) and ``skipped`` were skipped because a branch was not
    taken. A decision is taken as soon as it is certain, so no join waits forever.

    ``all_success`` (the default) runs when no parent failed and at least one completed:
    a parent on a branch not taken does not block a join, but a node whose parents were
    all skipped is skipped too.
    """
    rule = Rule(rule)
    done = ok + failed + skipped
    if done > total or min(total, ok, failed, skipped) < 0:
        raise ValueError(f"inconsistent tallies: total={total} ok={ok} failed={failed} skipped={skipped}")
    all_done = done == total
    if rule is Rule.ALL_SUCCESS:
        if failed:
            return Decision.SKIP
        if not all_done:
            return Decision.WAIT
        return Decision.READY if ok else Decision.SKIP
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


#: Rules under which a node can run after a parent failed: its completion handles the failure.
HANDLER_RULES = frozenset({Rule.ONE_FAILED, Rule.ALL_FAILED, Rule.ALL_DONE})


def skip_outcome(rule: Rule | str, failed: int) -> str:
    """What a skipped node tells its children: ``"fail"`` when it was skipped because of a
    failure upstream (so the failure keeps travelling down), else ``"skip"`` (a branch
    not taken)."""
    if failed and Rule(rule) in (Rule.ALL_SUCCESS, Rule.NONE_FAILED, Rule.ONE_SUCCESS):
        return "fail"
    return "skip"


def final_status(cancel_requested: bool, failed: int) -> RunStatus:
    """How a run ends once none of its nodes can change any more."""
    if cancel_requested:
        return RunStatus.CANCELLED
    return RunStatus.FAILED if failed else RunStatus.COMPLETED


def message_priority(run_priority: int, node_priority: int) -> int:
    """A node's queue priority: its run's priority plus its own (higher runs first)."""
    return run_priority + node_priority
