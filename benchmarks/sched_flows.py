"""The workflow bench_schedules.py starts (a module, so that clients without workers accept it)."""

from __future__ import annotations

from typing import Any

import autoflow as af


@af.node
def noop(event: dict[str, Any] | None = None) -> int:
    return 0


@af.workflow(name="bench_sched")
def scheduled(event: dict[str, Any] | None = None):
    return noop(event)
