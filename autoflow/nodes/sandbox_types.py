"""What callers of the code sandbox see: its errors (:class:`SandboxError` and below),
the :class:`CodeLimits` of one call, the :class:`CodeResult` of a successful one and the
:class:`SandboxInfo` that :func:`~autoflow.nodes.sandbox.check_sandbox` reports.

Re-exported by ``autoflow.nodes.sandbox``, where users import them from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autoflow.errors import AutoflowError, InputError
from autoflow.nodes.sandbox_bwrap import SITE_PATH

__all__ = [
    "CodeError",
    "CodeLimitExceeded",
    "CodeLimits",
    "CodeResult",
    "CodeTimeout",
    "SandboxError",
    "SandboxInfo",
    "SandboxUnavailable",
]


class SandboxError(AutoflowError):
    """The sandbox could not run the code or ended it; base of the errors below.
    ``stdout`` holds what the code printed before it failed, when it said."""

    stdout: str = ""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing or cannot create namespaces here, and unsandboxed execution
    is not allowed (``AUTOFLOW_ALLOW_UNSANDBOXED_CODE``). The message says how to fix it."""


class CodeError(SandboxError):
    """The user's code raised (or did not compile, or returned something that is not JSON).

    ``error_type`` is the exception's type inside the sandbox, ``line`` the line of the
    code it happened on, ``user_traceback`` the frames of the user's code only.
    """

    def __init__(self, error_type: str, message: str, user_traceback: str = "", line: int | None = None) -> None:
        self.error_type = error_type
        self.line = line
        self.user_traceback = user_traceback
        where = f" at line {line} of the code" if line else ""
        text = f"{error_type}{where}: {message}"
        super().__init__(f"{text}\n{user_traceback}".rstrip() if user_traceback else text)


class CodeLimitExceeded(SandboxError):
    """The code hit a limit that ends it: ``limit`` names the field of :class:`CodeLimits`."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class CodeTimeout(SandboxError, TimeoutError):
    """The code ran past its wall-clock ``timeout`` (or the node's) and was killed."""


def _int_range(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"code_execution: {name} must be an int from {low} to {high}, got {value!r}")


def _number_range(name: str, value: Any, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"code_execution: {name} must be a number from {low:g} to {high:g}, got {value!r}")


@dataclass(frozen=True)
class CodeLimits:
    """What one sandboxed call may use. Every field is also a config key of the
    ``code_execution`` node.

    ``timeout``: wall-clock seconds; ``memory_mb``: address space per process (RLIMIT_AS);
    ``cpu_seconds``: CPU time per process; ``max_processes``: processes and threads of the
    sandbox, the interpreter included; ``max_file_mb``: size of any file written;
    ``tmp_mb``: size of the in-memory ``/tmp`` (and of ``/dev/shm``); ``max_output_kb``:
    size of the JSON result; ``network``: ``"none"`` (default: an empty network
    namespace) or ``"host"`` (the worker's network, loopback services included: only for
    trusted code); ``allowed_modules``: top-level packages of the worker's environment
    made visible read-only (the standard library always is).

    Example::

        CodeLimits(timeout=5, memory_mb=128, allowed_modules=("numpy",))
    """

    timeout: float = 10.0
    memory_mb: int = 256
    cpu_seconds: float = 10.0
    max_processes: int = 16
    max_file_mb: int = 16
    tmp_mb: int = 64
    max_output_kb: int = 1024
    network: str = "none"
    allowed_modules: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _number_range("timeout", self.timeout, 0.01, 86_400)
        _int_range("memory_mb", self.memory_mb, 64, 1 << 20)
        _number_range("cpu_seconds", self.cpu_seconds, 1, 86_400)
        _int_range("max_processes", self.max_processes, 1, 4096)
        _int_range("max_file_mb", self.max_file_mb, 1, 1 << 20)
        _int_range("tmp_mb", self.tmp_mb, 1, 1 << 16)
        _int_range("max_output_kb", self.max_output_kb, 1, 1 << 20)
        if self.network not in ("none", "host"):
            raise InputError(f"code_execution: network must be 'none' or 'host', got {self.network!r}")
        if isinstance(self.allowed_modules, str) or not all(isinstance(m, str) for m in self.allowed_modules):
            raise InputError(
                f"code_execution: allowed_modules must be a list of module names, got {self.allowed_modules!r}"
            )
        object.__setattr__(self, "allowed_modules", tuple(self.allowed_modules))

    def for_runner(self, sandboxed: bool) -> dict[str, Any]:
        """The limits as the runner applies them (``sandbox_runner._apply_limits``)."""
        return {
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            # The sandbox's user namespace counts only its own processes; unsandboxed, the
            # limit would count every process of the worker's user: not applied.
            "max_processes": self.max_processes if sandboxed else None,
            "max_file_mb": self.max_file_mb,
            "max_output_kb": self.max_output_kb,
            "site": SITE_PATH if sandboxed and self.allowed_modules else None,
            "die_with_parent": not sandboxed,
        }


@dataclass(frozen=True)
class CodeResult:
    """The outcome of a successful call: the JSON ``value``, what the code printed
    (``stdout``, at most 64 KiB) and wrote to its stderr, whether it ran sandboxed, and
    its wall and CPU time."""

    value: Any
    stdout: str = ""
    stderr: str = ""
    sandboxed: bool = True
    duration: float = 0.0
    cpu_time: float = 0.0


@dataclass(frozen=True)
class SandboxInfo:
    """What :func:`check_sandbox` found: whether code runs sandboxed here, with which
    bubblewrap and interpreter, and why not when it cannot."""

    available: bool
    bwrap: str | None
    version: str | None
    python: str
    drops_root: bool
    problem: str | None = None
