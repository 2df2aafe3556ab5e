"""The control-flow DAGs of the chaos tests (``autoflow worker tests.resources.chaos_flow``).

``chaos_flow(seed)``: a branch, a join, a map over a list known only at run time::

    source --> cond (-> bool) ..when=cond..> high --> high_post --+
       |                      ..when=~cond.> low -----------------+--> join --+
       |                                                                      +--> total
       +-----> make_list (5-8 ints) --> mapped = item.map(max_parallel=3) ---+

``cond`` is a deterministic function of the seed, true for about half the seeds; the
side not taken (``high`` and ``high_post``, or ``low``) ends ``skipped``. ``join`` runs
with whichever side ran (the other's value is ``None``). ``mapped`` runs one item per
element of ``make_list``'s output (sub-entries ``mapped[0]``, ``mapped[1]``, ...), and
``total`` consumes the list of results, in item order.

``chaos_delay(seed, seconds)``: ``before -> af.delay(seconds=...) -> after``, for the
test that a durable delay survives a worker restart.

Every node, and every map item, audits its executions like the nodes of
:mod:`tests.resources.chaos` (same file, same format: ``AUTOFLOW_CHAOS_AUDIT``) and is
deterministic in its inputs (see :func:`expected`). Node types are explicit
(``chaos_flow.*``), so registry keys do not depend on the import name of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import autoflow as af
from tests.resources.chaos import AUDIT_ENV, SLEEP_ENV, _work

__all__ = ["AUDIT_ENV", "SLEEP_ENV", "Expected", "chaos_delay", "chaos_flow", "expected"]

SOURCE, COND, HIGH, HIGH_POST, LOW, JOIN = "source", "cond", "high", "high_post", "low", "join"
MAKE_LIST, MAPPED, TOTAL = "make_list", "mapped", "total"
NODE_IDS = (SOURCE, COND, HIGH, HIGH_POST, LOW, JOIN, MAKE_LIST, MAPPED, TOTAL)
#: The parents of every node in the graph (checked against ``chaos_flow.graph``).
PARENTS: dict[str, tuple[str, ...]] = {
    SOURCE: (),
    COND: (SOURCE,),
    HIGH: (COND, SOURCE),
    HIGH_POST: (HIGH,),
    LOW: (COND, SOURCE),
    JOIN: (HIGH_POST, LOW),
    MAKE_LIST: (SOURCE,),
    MAPPED: (MAKE_LIST,),
    TOTAL: (JOIN, MAPPED),
}
MAX_PARALLEL = 3
ITEM_K = 11  # a fixed keyword argument of the mapped node
HIGH_K, HIGH_POST_K, LOW_K = 2, 3, 5

# The delay DAG.
BEFORE, DELAY, AFTER = "before", "delay", "after"
DELAY_NODE_IDS = (BEFORE, DELAY, AFTER)


def _source(seed: int) -> int:
    return seed * 7 + 3


def _cond(source: int) -> bool:
    # Knuth's multiplicative hash: a pseudo-random bit, true for about half the seeds.
    return bool(((source * 2654435761) % 2**32) >> 16 & 1)


def _step(value: int, k: int) -> int:
    return value * k + k


def _join(high: int | None, low: int | None) -> int:
    if (high is None) == (low is None):
        return -1  # both sides ran, or none did: never the expected value
    return high * 2 + 1 if high is not None else low * 2  # type: ignore[operator]


def _make_list(source: int) -> list[int]:
    return [source + 11 * i for i in range(5 + source % 4)]  # 5-8 distinct items


def _item(x: int, k: int) -> int:
    return x * 3 + k


def _total(values: list[int], joined: int) -> int:
    # Order-sensitive, so a list gathered out of item order would show.
    return sum((i + 1) * v for i, v in enumerate(values)) + 1000 * joined


@af.node(type="chaos_flow.source")
def flow_source(seed: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: _source(seed)))


@af.node(type="chaos_flow.cond")
def flow_cond(source: int, ctx: af.Context) -> bool:
    return bool(_work(ctx, lambda: _cond(source)))


@af.node(type="chaos_flow.step")
def flow_step(value: int, k: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: _step(value, k)))


@af.node(type="chaos_flow.join")
def flow_join(high: int | None, low: int | None, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: _join(high, low)))


@af.node(type="chaos_flow.make_list")
def flow_make_list(source: int, ctx: af.Context) -> list[int]:
    return list(_work(ctx, lambda: _make_list(source)))


@af.node(type="chaos_flow.item")
def flow_item(x: int, k: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: _item(x, k)))


@af.node(type="chaos_flow.total")
def flow_total(values: list[int], joined: int, ctx: af.Context) -> int:
    return int(_work(ctx, lambda: _total(values, joined)))


@af.workflow
def chaos_flow(seed: int = 0):
    """A branch (when=cond / when=~cond) with a join, and a map, then a node after both."""
    source = flow_source.with_options(name=SOURCE)(seed)
    cond = flow_cond.with_options(name=COND)(source)
    high = flow_step.with_options(name=HIGH)(source, HIGH_K, when=cond)
    high_post = flow_step.with_options(name=HIGH_POST)(high, HIGH_POST_K)  # skipped with high
    low = flow_step.with_options(name=LOW)(source, LOW_K, when=~cond)
    joined = flow_join.with_options(name=JOIN)(high_post, low)
    values = flow_make_list.with_options(name=MAKE_LIST)(source)
    mapped = flow_item.with_options(name=MAPPED).map(values, k=ITEM_K, max_parallel=MAX_PARALLEL)
    return flow_total.with_options(name=TOTAL)(mapped, joined)


@af.workflow
def chaos_delay(seed: int = 0, seconds: float = 3.0):
    """before -> af.delay(seconds) -> after."""
    before = flow_step.with_options(name=BEFORE)(seed, 1)
    return flow_step.with_options(name=AFTER)(af.delay(before, seconds=seconds), 2)


@dataclass(frozen=True)
class Expected:
    """What a correct execution of ``chaos_flow(seed)`` records."""

    outputs: dict[str, object]  # node id -> output, for every node that runs
    skipped: tuple[str, ...]  # the nodes of the branch not taken
    items: list[int]  # the list the map runs over
    item_outputs: list[int]  # the output of each item, in item order
    took_high: bool


def expected(seed: int) -> Expected:
    source = _source(seed)
    cond = _cond(source)
    outputs: dict[str, object] = {SOURCE: source, COND: cond}
    if cond:
        high = _step(source, HIGH_K)
        high_post = _step(high, HIGH_POST_K)
        outputs.update({HIGH: high, HIGH_POST: high_post})
        joined = _join(high_post, None)
        skipped: tuple[str, ...] = (LOW,)
    else:
        low = _step(source, LOW_K)
        outputs[LOW] = low
        joined = _join(None, low)
        skipped = (HIGH, HIGH_POST)
    items = _make_list(source)
    item_outputs = [_item(x, ITEM_K) for x in items]
    outputs.update(
        {JOIN: joined, MAKE_LIST: items, MAPPED: item_outputs, TOTAL: _total(item_outputs, joined)},
    )
    return Expected(outputs, skipped, items, item_outputs, cond)


def expected_delay(seed: int) -> dict[str, int]:
    before = _step(seed, 1)
    return {BEFORE: before, DELAY: before, AFTER: _step(before, 2)}
