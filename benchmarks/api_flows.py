"""The workflow the API benchmark runs: one no-op node (the engine's cost is measured
elsewhere; here it is the HTTP and webhook path)."""

from __future__ import annotations

from typing import Any

import autoflow as af


@af.node
def bench_echo(body: Any = None) -> int:
    return 1


@af.workflow
def bench_api(body: Any = None):
    return bench_echo(body)
