"""Small DAGs importable by worker subprocesses (``autoflow worker tests.resources.dags``).

Workflow names carry a ``res_`` prefix so this module can be imported beside test modules
that define workflows of the same function names (names are unique per registry)."""

from __future__ import annotations

import time

import autoflow as af


@af.node
def double(x: int) -> int:
    return 2 * x


@af.node
def add(a: int, b: int) -> int:
    return a + b


@af.node
def total(*parts: int) -> int:
    return sum(parts)


@af.node
def sleepy(seconds: float, ctx: af.Context) -> float:
    ctx.log.info("sleeping", data={"seconds": seconds})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.02)
    return seconds


@af.workflow(name="res_diamond")
def diamond(x: int = 1):
    """x -> (2x, 2x) -> 4x"""
    return add(double(x), double(x))


@af.workflow(name="res_chain10")
def chain10(x: int = 0):
    value = double(x)
    for _ in range(9):
        value = add(value, 1)
    return value


@af.workflow(name="res_slow")
def slow(seconds: float = 5.0):
    return sleepy(seconds)


@af.node(retries=0)
def boom(x: int) -> int:
    raise RuntimeError(f"boom {x}")


@af.workflow(name="res_broken")
def broken(x: int = 1):
    return double(boom(x))


@af.node(retries=0, timeout=0.5)
def overrun(seconds: float) -> float:
    time.sleep(seconds)  # a blocking call: only a process worker can interrupt it
    return seconds


@af.workflow(name="res_overrunning")
def overrunning(seconds: float = 10.0):
    return overrun(seconds)


@af.node(retries=0)
def deaf(seconds: float) -> float:
    time.sleep(seconds)  # never looks at ctx.cancelled
    return seconds


@af.workflow(name="res_deaf_flow")
def deaf_flow(seconds: float = 30.0):
    return deaf(seconds)
