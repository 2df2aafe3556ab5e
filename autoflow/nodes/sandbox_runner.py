"""The script that runs user code inside the sandbox (``python -I -S runner.py LIMITS``).

It is shipped with the package and bound read-only into the sandbox by
``autoflow.nodes.sandbox``; it imports nothing of autoflow (only the standard library is
there). Protocol: ``argv[1]`` holds the limits as JSON (applied first, before any input
is read), stdin one JSON document ``{"code": str, "data": any}``, and the original stdout
carries one JSON document back:

* ``{"ok": true, "result": ..., "stdout": "..."}``, or
* ``{"ok": false, "error": {"type", "message", "traceback", "line"}, "stdout": "..."}``.

The code either defines ``main(data)`` (its return value is the result) or assigns a
global ``result``; ``data`` is also a global. ``print`` output is captured (bounded) and
returned as ``stdout``; file descriptor 1 is pointed at stderr so that nothing the code
or its subprocesses write can corrupt the protocol.
"""

from __future__ import annotations

import io
import json
import linecache
import math
import os
import resource
import signal
import sys
import traceback
from typing import Any

__all__ = ["CODE_FILENAME", "CPUTimeLimit", "run", "user_traceback"]

#: The file name user code is compiled under; traceback frames of the runner are dropped.
CODE_FILENAME = "<code>"
_STDOUT_LIMIT = 64 * 1024
_TRACEBACK_LIMIT = 8 * 1024
_MIB = 1024 * 1024


class CPUTimeLimit(BaseException):
    """Raised in the code by SIGXCPU: the CPU time limit (``cpu_seconds``) was reached.

    A BaseException so that a bare ``except Exception`` in user code does not swallow it."""


class _Capture(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of the code: keeps the first 64 KiB of text."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = _STDOUT_LIMIT - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[... {self.dropped} more characters of output dropped]"
        return out


def _apply_limits(limits: dict[str, Any]) -> None:
    """rlimits of this process and everything it starts; they cannot be raised again."""

    def cap(kind: int, soft: int, hard: int | None = None) -> None:
        resource.setrlimit(kind, (soft, soft if hard is None else hard))

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, 256)
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) * _MIB)
    cap(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) * _MIB)
    if limits.get("max_processes") is not None:
        cap(resource.RLIMIT_NPROC, int(limits["max_processes"]))
    cpu = max(1, math.ceil(float(limits["cpu_seconds"])))
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL a second later


def _on_xcpu(signum: int, frame: Any) -> None:
    raise CPUTimeLimit("CPU time limit exceeded")


def user_traceback(exc: BaseException) -> tuple[str, int | None]:
    """The traceback of ``exc`` from the first frame of the user's code on (the runner's
    own frames dropped), and the line of the code where it happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == CODE_FILENAME), len(frames))
    kept = [f for f in frames[first:] if f.filename != __file__]  # e.g. the SIGXCPU handler
    line = next((f.lineno for f in reversed(kept) if f.filename == CODE_FILENAME), None)
    if isinstance(exc, SyntaxError) and exc.filename == CODE_FILENAME:
        line = exc.lineno
    lines = traceback.format_exception_only(type(exc), exc)
    if kept:
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept), *lines]
    text = "".join(lines)
    if len(text) > _TRACEBACK_LIMIT:
        text = "[...]\n" + text[-_TRACEBACK_LIMIT:]
    return text, line


def _error(exc: BaseException, limits: dict[str, Any]) -> dict[str, Any]:
    text, line = user_traceback(exc)
    message = str(exc)
    kind = type(exc).__name__
    if isinstance(exc, MemoryError):
        message = f"out of memory: the code may use {limits['memory_mb']} MiB per process (memory_mb)"
    elif isinstance(exc, CPUTimeLimit):
        message = f"the code used more than {limits['cpu_seconds']:g} s of CPU time (cpu_seconds)"
    elif isinstance(exc, SystemExit):
        message = f"the code called exit({exc.code!r}) before producing a result"
    return {"type": kind, "message": message[:_TRACEBACK_LIMIT], "traceback": text, "line": line}


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _execute(code: str, data: Any) -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__, "data": data}
    linecache.cache[CODE_FILENAME] = (len(code), None, code.splitlines(True), CODE_FILENAME)
    compiled = compile(code, CODE_FILENAME, "exec", dont_inherit=True)
    exec(compiled, namespace)
    main = namespace.get("main")
    if callable(main):
        takes = getattr(getattr(main, "__code__", None), "co_argcount", 1)
        return main() if takes == 0 else main(data)
    if "result" in namespace:
        return namespace["result"]
    raise NameError("the code defines neither a function main(data) nor a variable result")


def run(limits: dict[str, Any], stdin: Any, proto: Any) -> None:
    """Read the payload, run the code, write the outcome to ``proto`` (a binary file)."""
    owner = os.getpid()
    capture = _Capture()
    sys.stdout = sys.stderr = capture
    reply: dict[str, Any] = {"ok": False}
    text = "null"  # the result as JSON, spliced into the reply as it is
    try:
        payload = json.loads(stdin.read())
        result = _execute(payload["code"], payload.get("data"))
        if os.getpid() != owner:  # a fork of the code returned: only the first process reports
            os._exit(0)
        try:
            text = json.dumps(result, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the result is not JSON: {exc}") from None
        size = len(text.encode())
        if size > int(limits["max_output_kb"]) * 1024:
            text = "null"
            raise ValueError(f"the result is {size // 1024} KiB, more than max_output_kb={limits['max_output_kb']}")
        reply = {"ok": True, "cpu": _cpu()}
    except BaseException as exc:  # everything the code does wrong is reported, not raised
        if os.getpid() != owner:
            os._exit(1)
        reply["error"] = _error(exc, limits)
    reply["stdout"] = capture.text()
    head = json.dumps(reply, ensure_ascii=False, default=repr)
    proto.write(f'{head[:-1]}, "result": {text}}}'.encode())
    proto.flush()


def _main() -> None:
    limits = json.loads(sys.argv[1])
    if limits.get("site"):
        sys.path.append(limits["site"])  # the allowed third-party modules, bound read-only
    _apply_limits(limits)
    signal.signal(signal.SIGXCPU, _on_xcpu)
    if limits.get("die_with_parent"):  # unsandboxed mode: no bwrap to do it for us
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the code's raw writes to fd 1 land on stderr, never in the protocol
    try:
        run(limits, sys.stdin.buffer, proto)
    except BaseException:  # the protocol itself broke (the code closed its descriptor?)
        os._exit(70)
    os._exit(0)  # threads the code left behind do not keep the sandbox alive


if __name__ == "__main__":
    _main()
