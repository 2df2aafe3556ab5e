"""Reading the sandbox runner's reply (pure: what the watch saw in, result or error out).

The runner writes one JSON object (see ``sandbox_runner.py``): ``{"ok": true, "result",
"stdout", "cpu"}`` or ``{"ok": false, "error": {"type", "message", "traceback", "line"},
"stdout"}``. Without one, the exit status says why: bubblewrap could not set up the
sandbox, a signal killed the code (SIGXCPU: its CPU time; SIGKILL: CPU time in native
code, or the kernel out of memory), or it exited early. Used by ``autoflow.nodes.sandbox``;
its helpers are private to that module.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from autoflow import codec
from autoflow.nodes.sandbox_types import (
    CodeError,
    CodeLimitExceeded,
    CodeLimits,
    CodeResult,
    SandboxError,
    SandboxUnavailable,
)
from autoflow.nodes.sandbox_watch import Ended

__all__: list[str] = []  # private helpers of sandbox.py


def _outcome(ended: Ended, limits: CodeLimits, sandboxed: bool, duration: float) -> CodeResult:
    """The result in the runner's reply, or the error that explains why there is none."""
    stderr = ended.stderr.decode("utf-8", "replace")
    try:
        reply = json.loads(ended.stdout) if ended.stdout else None
    except ValueError:
        reply = None
    if isinstance(reply, dict) and reply.get("ok") is True:
        cpu = reply.get("cpu")
        cpu = float(cpu) if isinstance(cpu, (int, float)) else 0.0
        return CodeResult(reply.get("result"), str(reply.get("stdout", "")), stderr, sandboxed, duration, cpu)
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        error = _code_error(reply["error"])
        error.stdout = str(reply.get("stdout", ""))
        raise error
    tail = codec.redact_text(stderr[-2000:]).strip()
    code = ended.returncode
    if sandboxed and code == 1 and stderr.startswith("bwrap:"):
        raise SandboxUnavailable(f"bubblewrap could not set up the sandbox: {tail}")
    # bwrap exits with 128 + the signal that killed the code; a plain child with -signal.
    killed_by = -code if code is not None and code < 0 else code - 128 if code and sandboxed and code > 128 else None
    if killed_by == signal.SIGXCPU:
        raise CodeLimitExceeded("cpu_seconds", f"the code used more than {limits.cpu_seconds:g} s of CPU time")
    if killed_by == signal.SIGKILL:
        raise SandboxError(
            f"the code was killed by SIGKILL before it produced a result: it passed its CPU time limit "
            f"(cpu_seconds={limits.cpu_seconds:g}) in native code, or the kernel ran out of memory{_said(tail)}"
        )
    if killed_by is not None:
        raise SandboxError(f"the code was killed by {_signal_name(killed_by)} before it produced a result{_said(tail)}")
    raise SandboxError(f"the code's process exited with status {code} without a result{_said(tail)}")


def _code_error(error: dict[str, Any]) -> SandboxError:
    """The error of a reply ``{"type", "message", "traceback", "line"}``: a limit the code
    ran into inside Python, or the exception it raised (secrets in its text redacted)."""
    kind = str(error.get("type", "Error"))
    message = codec.redact_text(str(error.get("message", "")))
    trace = codec.redact_text(str(error.get("traceback", "")))
    line = error.get("line") if isinstance(error.get("line"), int) else None
    where = f" (line {line} of the code)" if line else ""
    if kind == "CPUTimeLimit":
        return CodeLimitExceeded("cpu_seconds", f"{message}{where}")
    if kind == "MemoryError":
        return CodeLimitExceeded("memory_mb", f"{message}{where}\n{trace}".rstrip())
    return CodeError(kind, message, trace, line)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _said(tail: str) -> str:
    return f"; its stderr ends with: {tail}" if tail else ""
