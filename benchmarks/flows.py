"""The workflows the benchmarks run: no-op chains and fan-outs of 10 and 1,000 nodes.

Workers import this module (``autoflow worker benchmarks.flows``); the node keys are
explicit (``type=``) so the benchmark driver and the workers agree on them however the
module was imported.
"""

from __future__ import annotations

import autoflow as af

__all__ = ["CHAIN_10", "CHAIN_1000", "FANOUT_10", "FANOUT_1000", "MAP", "items", "noop", "sink", "source"]


@af.node(type="bench.noop", retries=0)
def noop(x: int) -> int:
    """One step: return the input unchanged."""
    return x


@af.node(type="bench.source", retries=0)
def source(x: int) -> int:
    """The root of a fan-out."""
    return x


@af.node(type="bench.sink", retries=0)
def sink(xs: list[int]) -> int:
    """The join of a fan-out: reads every leaf's output."""
    return len(xs)


def _chain(n: int) -> af.Workflow:
    def body(x: int) -> int:
        for _ in range(n):
            x = noop(x)
        return x

    body.__name__ = body.__qualname__ = f"bench_chain_{n}"
    return af.workflow(body)


def _fanout(n: int) -> af.Workflow:
    """``n`` nodes: one root, ``n - 2`` parallel leaves, one join."""

    def body(x: int) -> int:
        root = source(x)
        return sink([noop(root) for _ in range(n - 2)])

    body.__name__ = body.__qualname__ = f"bench_fanout_{n}"
    return af.workflow(body)


@af.node(type="bench.items", retries=0)
def items(n: int) -> list[int]:
    """The list a map fans out over, known only at run time."""
    return list(range(n))


@af.workflow(name="bench_map")
def MAP(n: int):
    """A map of one no-op per item: ``n`` items, then their results gathered."""
    return sink(noop.map(items(n)))


CHAIN_10 = _chain(10)
CHAIN_1000 = _chain(1000)
FANOUT_10 = _fanout(10)
FANOUT_1000 = _fanout(1000)
