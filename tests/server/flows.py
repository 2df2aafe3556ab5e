"""Workflows the API tests run (imported by name: the server's client finds them)."""

from __future__ import annotations

from typing import Any

import autoflow as af


@af.node
def api_add(a: int, b: int = 1) -> int:
    return a + b


@af.node
def api_double(x: int, ctx: af.Context) -> int:
    ctx.log.info("doubling", data={"x": x})
    return 2 * x


@af.workflow
def api_flow(a: int = 1):
    return api_double(api_add(a))


@af.node
def api_nap(seconds: float, ctx: af.Context) -> float:
    ctx.wait(seconds)
    ctx.check_cancelled()
    return seconds


@af.workflow
def api_slow(seconds: float = 60.0):
    return api_nap(seconds)


@af.node
def api_echo(body: Any, path: str) -> dict[str, Any]:
    return {"body": body, "path": path}


@af.workflow
def api_hook(body: Any = None, path: str = ""):
    return api_echo(body, path)


_calls = {"n": 0}


@af.node(retries=2, backoff=af.Backoff(base=0.01, max=0.02, jitter=False))
def api_flaky(x: int) -> int:
    _calls["n"] += 1
    if _calls["n"] % 2 == 1:
        raise RuntimeError("first attempt fails")
    return x


@af.workflow
def api_retry(x: int = 1):
    return api_flaky(x)
