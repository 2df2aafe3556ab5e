"""Nodes and workflows for the notebook tests (importable, so any worker can run them)."""

from __future__ import annotations

import time

import autoflow as af

FAST = af.Backoff(base=0.01, factor=1.0, max=0.01, jitter=False)


@af.node
def nb_source(n: int) -> list[int]:
    return list(range(n))


@af.node(retries=3, timeout=30.0)
def nb_square(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


@af.node
def nb_sum(xs: list[int]) -> int:
    return sum(xs)


@af.node(retries=1, backoff=FAST)
def nb_boom(xs: list[int], ctx: af.Context) -> int:
    ctx.log.info("about to fail", data={"items": len(xs)})
    raise ValueError(f"boom: cannot use {len(xs)} items <script>")


@af.node(retries=0)
def nb_wait(seconds: float, ctx: af.Context) -> float:
    ctx.log.info("waiting", data={"seconds": seconds})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.02)
    return seconds


@af.node(retries=0)
def nb_then(previous: float, seconds: float, ctx: af.Context) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.02)
    return previous + seconds


@af.node
def nb_chatty(lines: int, ctx: af.Context) -> int:
    for i in range(lines):
        ctx.log.info(f"line {i}", data={"i": i} if i % 1000 == 0 else None)
    return lines


@af.node
def nb_one() -> int:
    return 1


@af.node
def nb_inc(x: int) -> int:
    return x + 1


@af.node
def nb_total(*parts: int) -> int:
    return sum(parts)


@af.workflow(name="nb_pipeline")
def pipeline(n: int = 3):
    return nb_sum(nb_square(nb_source(n)))


@af.workflow(name="nb_failing")
def failing(n: int = 3):
    return nb_boom(nb_source(n))


@af.workflow(name="nb_slow")
def slow(seconds: float = 10.0):
    return nb_wait(seconds)


@af.workflow(name="nb_two_steps")
def two_steps(first: float = 0.8, second: float = 0.3):
    return nb_then(nb_wait(first), second)


@af.workflow(name="nb_delayed")
def delayed(seconds: float = 30.0):
    """A durable delay: its node is ``waiting`` (no worker held) for ``seconds``."""
    return nb_sum(af.delay(nb_source(3), seconds=seconds))


@af.workflow(name="nb_chatty")
def chatty(lines: int = 10_000):
    return nb_chatty(lines)


WIDE = 118


@af.workflow(name="nb_wide")
def wide():
    """120 nodes: one source, 118 parallel steps, one join."""
    start = nb_one()
    return nb_total(*[nb_inc(start) for _ in range(WIDE)])
