"""The fan-out/fan-in DAG of the chaos tests (``autoflow worker tests.resources.chaos``).

    source = chaos_source(seed) --+--> branch_1 = chaos_branch(source, k=1) --+
                                  +--> branch_2 = chaos_branch(source, k=2) --+--> join = chaos_join
                                  +--> branch_3 = chaos_branch(source, k=3) --+

Every node is deterministic in its inputs (see :func:`expected`) and takes a little
time, so that a SIGKILL lands mid-node. Every *execution* (not only the accepted one)
is audited: when ``AUTOFLOW_CHAOS_AUDIT`` names a file, a node appends one JSON line
when it starts and one when it returns (a single ``O_APPEND`` write each, so lines of
concurrent processes never interleave). A killed execution leaves a start line without
its end line. ``AUTOFLOW_CHAOS_SLEEP="low,high"`` sets the node duration in seconds
(default 0.02-0.05).

The node types are explicit (``chaos.*``), so the registry keys do not depend on the
name this module is imported under.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

import autoflow as af

AUDIT_ENV = "AUTOFLOW_CHAOS_AUDIT"
SLEEP_ENV = "AUTOFLOW_CHAOS_SLEEP"
BRANCHES = (1, 2, 3)
#: Node ids in the graph (set explicitly with ``with_options(name=...)``).
SOURCE, JOIN = "source", "join"
BRANCH_IDS = tuple(f"branch_{k}" for k in BRANCHES)
NODE_IDS = (SOURCE, *BRANCH_IDS, JOIN)
PARENTS: dict[str, tuple[str, ...]] = {SOURCE: (), **{b: (SOURCE,) for b in BRANCH_IDS}, JOIN: BRANCH_IDS}


def _audit(record: dict[str, Any]) -> None:
    path = os.environ.get(AUDIT_ENV)
    if not path:
        return
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _work(ctx: af.Context, compute: Any) -> Any:
    """Audit the start, take a while, compute, audit the end."""
    exec_id = uuid.uuid4().hex
    base = {"x": exec_id, "run": ctx.run_id, "node": ctx.node_id, "attempt": ctx.attempt, "pid": os.getpid()}
    start = time.time()
    _audit({**base, "ev": "start", "ts": start})
    low, high = (float(v) for v in os.environ.get(SLEEP_ENV, "0.02,0.05").split(","))
    time.sleep(random.uniform(low, high))
    value = compute()
    _audit({**base, "ev": "end", "ts": time.time(), "start": start, "value": value})
    return value


@af.node(type="chaos.source")
def chaos_source(seed: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: seed * 7 + 3))


@af.node(type="chaos.branch")
def chaos_branch(value: int, k: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: value * k + k))


@af.node(type="chaos.join")
def chaos_join(a: int, b: int, c: int, ctx: af.Context) -> int:
    # Order-sensitive, so crossed wiring would show.
    return int(_work(ctx, lambda: a + 10 * b + 100 * c))


@af.workflow
def chaos_fan(seed: int = 0):
    """source -> 3 branches -> join."""
    source = chaos_source.with_options(name=SOURCE)(seed)
    a, b, c = (chaos_branch.with_options(name=f"branch_{k}")(source, k) for k in BRANCHES)
    return chaos_join.with_options(name=JOIN)(a, b, c)


def expected(seed: int) -> dict[str, int]:
    """The output each node of ``chaos_fan(seed)`` must have recorded."""
    source = seed * 7 + 3
    branches = [source * k + k for k in BRANCHES]
    join = branches[0] + 10 * branches[1] + 100 * branches[2]
    return {SOURCE: source, **dict(zip(BRANCH_IDS, branches, strict=True)), JOIN: join}
