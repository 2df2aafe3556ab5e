"""``code_execution``: run a snippet of Python on upstream data, sandboxed by the OS.

The seed's "code" utility node ran JavaScript; autoflow's runs Python, each call in a fresh
bubblewrap sandbox (see ``autoflow.nodes.sandbox`` and docs/nodes-code.md). The code
defines ``main(data)`` and returns JSON, or sets a global ``result``::

    @af.workflow
    def scores(rows: list[dict]):
        return code_execution(
            code="def main(data):\\n    return sorted(r['score'] for r in data)",
            data=rows,
            timeout=5,
        )

In a JSON definition: ``{"type": "code_execution", "config": {"code": "...", "timeout": 5}}``
with an edge into its ``data`` input.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from autoflow.context import Context
from autoflow.define.node import node
from autoflow.define.registry import builtin_registry
from autoflow.nodes.sandbox import CodeLimits, SandboxError, run_code

__all__ = ["CODE_EXECUTION_TYPE", "code_execution"]

CODE_EXECUTION_TYPE = "code_execution"
_MAX_LOG_LINES = 200
_DEFAULTS = CodeLimits()


@node(type=CODE_EXECUTION_TYPE, retries=0, registry=builtin_registry())
def code_execution(
    code: Annotated[str, Field(min_length=1, max_length=1_000_000)],
    data: Any = None,
    *,
    ctx: Context,
    # The limits' ranges are checked once, by CodeLimits (an InputError naming the key).
    timeout: float = _DEFAULTS.timeout,
    memory_mb: int = _DEFAULTS.memory_mb,
    cpu_seconds: float = _DEFAULTS.cpu_seconds,
    max_processes: int = _DEFAULTS.max_processes,
    max_file_mb: int = _DEFAULTS.max_file_mb,
    tmp_mb: int = _DEFAULTS.tmp_mb,
    max_output_kb: int = _DEFAULTS.max_output_kb,
    network: Literal["none", "host"] = "none",
    allowed_modules: list[str] | None = None,
) -> Any:
    """Run ``code`` (Python) on ``data`` in a fresh OS sandbox and return its JSON result.

    The code defines ``main(data)`` (its return value is the result) or assigns a global
    ``result``; ``data`` is also a global. What it prints goes to the run's log. The
    limits (see :class:`autoflow.nodes.sandbox.CodeLimits`) are config keys: ``timeout``
    (seconds), ``memory_mb``, ``cpu_seconds``, ``max_processes``, ``max_file_mb``,
    ``tmp_mb``, ``max_output_kb``, ``network`` (``"none"``/``"host"``) and
    ``allowed_modules``. Not retried by default: the same code fails the same way.
    """
    limits = CodeLimits(
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        max_processes=max_processes,
        max_file_mb=max_file_mb,
        tmp_mb=tmp_mb,
        max_output_kb=max_output_kb,
        network=network,
        allowed_modules=tuple(allowed_modules or ()),
    )
    try:
        outcome = run_code(code, data, limits, cancelled=lambda: ctx.cancelled, time_limit=ctx.time_remaining)
    except SandboxError as exc:
        _log_printed(ctx, exc.stdout)  # what it printed before failing helps to see why
        raise
    if not outcome.sandboxed:
        ctx.log.warn("the code ran WITHOUT a sandbox: AUTOFLOW_ALLOW_UNSANDBOXED_CODE is set and bwrap is unusable")
    _log_printed(ctx, outcome.stdout)
    if outcome.stderr.strip():
        ctx.log.warn("the code wrote to stderr", data={"stderr": outcome.stderr[-4000:]})
    ctx.log.debug(f"sandboxed call: {outcome.duration * 1000:.0f} ms wall, {outcome.cpu_time * 1000:.0f} ms CPU")
    return outcome.value


def _log_printed(ctx: Context, printed: str) -> None:
    """One info line per printed line, at most 200 (secrets are redacted by the logger)."""
    lines = printed.splitlines()
    for line in lines[:_MAX_LOG_LINES]:
        ctx.log.info(line)
    if len(lines) > _MAX_LOG_LINES:
        ctx.log.info(f"[... {len(lines) - _MAX_LOG_LINES} more printed lines not logged]")
