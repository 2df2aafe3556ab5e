"""Running untrusted Python code in a fresh process sandboxed by the operating system.

Each call starts ``python -I -S`` under `bubblewrap <https://github.com/containers/bubblewrap>`_
with its own user, PID, network, mount, IPC and UTS namespaces: uid 65534 with no
capabilities, a read-only root holding only ``/usr``, the interpreter and an empty
``/tmp``, no network (not even the host's loopback), a cleared environment, and death
with its parent. rlimits bound memory, CPU time, processes and file sizes; a wall-clock
timeout, the run's cancellation and the node's own timeout kill the whole sandbox.
Input and output travel as JSON over stdin/stdout (see ``sandbox_runner.py``).

A worker running as root does not hand root to the code: bwrap then runs in two stages,
the first (root) only making the interpreter visible, the second as the real user
``nobody`` (65534), so that process limits apply and an escape lands on ``nobody``.

Where bubblewrap is missing or cannot create namespaces, :func:`run_code` refuses with
:class:`SandboxUnavailable` (saying how to install it), unless the worker's environment
sets ``AUTOFLOW_ALLOW_UNSANDBOXED_CODE=1``: the code then runs in a plain child process
with the same limits but the worker's user, files and network (see docs/nodes-code.md).

Example::

    from autoflow.nodes.sandbox import CodeLimits, run_code

    run_code("def main(data):\\n    return sum(data)", [1, 2, 3]).value      # 6
    run_code("result = data * 2", 21, CodeLimits(timeout=2, memory_mb=128)).value  # 42
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoflow import codec
from autoflow.errors import AutoflowError, InputError, NodeCancelled, OutputError
from autoflow.nodes.sandbox_bwrap import (
    NETWORK_FILES,
    SITE_PATH,
    drop_root_argv,
    module_binds,
    python_prefix,
    sandbox_argv,
    visible,
)
from autoflow.nodes.sandbox_watch import Ended, Stop, Watch

__all__ = [
    "ALLOW_UNSANDBOXED_ENV",
    "CodeError",
    "CodeLimitExceeded",
    "CodeLimits",
    "CodeResult",
    "CodeTimeout",
    "SandboxError",
    "SandboxInfo",
    "SandboxUnavailable",
    "check_sandbox",
    "run_code",
]

log = logging.getLogger("autoflow.sandbox")

#: Set to 1/true/yes in a worker's environment to run code without a sandbox where
#: bubblewrap cannot be used. The code then can do whatever the worker can.
ALLOW_UNSANDBOXED_ENV = "AUTOFLOW_ALLOW_UNSANDBOXED_CODE"
_BWRAP_ENV = "AUTOFLOW_BWRAP"  # path of the bwrap binary (default: found on PATH)
_PYTHON_ENV = "AUTOFLOW_SANDBOX_PYTHON"  # interpreter run inside (default: the worker's)

_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora/RHEL: dnf install bubblewrap; "
    "Alpine: apk add bubblewrap), or set AUTOFLOW_ALLOW_UNSANDBOXED_CODE=1 in the worker's environment to run "
    "code WITHOUT a sandbox (unsafe: the code can then do anything the worker can)"
)
_ENVELOPE = 256 * 1024  # room for captured print output and tracebacks around the result


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


# -- finding the pieces -------------------------------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _python() -> str:
    configured = os.environ.get(_PYTHON_ENV)
    return os.path.realpath(configured or getattr(sys, "_base_executable", None) or sys.executable)


def _bwrap() -> str | None:
    configured = os.environ.get(_BWRAP_ENV)
    if configured:
        return os.path.realpath(configured) if os.access(configured, os.X_OK) else None
    found = shutil.which("bwrap")
    return os.path.realpath(found) if found else None


def _runner_source() -> bytes:
    return Path(__file__).with_name("sandbox_runner.py").read_bytes()


@dataclass
class _Launch:
    """A command to start; ``pass_fds`` are closed here once it started, ``workdir``
    (unsandboxed only) is removed when it ended."""

    argv: list[str]
    sandboxed: bool
    pass_fds: tuple[int, ...] = ()
    workdir: str | None = None

    def started(self) -> None:
        for fd in self.pass_fds:
            os.close(fd)
        self.pass_fds = ()

    def ended(self) -> None:
        self.started()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _launch(info: SandboxInfo, limits: CodeLimits) -> _Launch:
    runner = _runner_source()
    if not info.available:  # allowed to run unsandboxed: a plain child in a scratch directory
        workdir = tempfile.mkdtemp(prefix="autoflow-code-")
        Path(workdir, "runner.py").write_bytes(runner)
        argv = [info.python, "-I", "-S", "-B", "runner.py", json.dumps(limits.for_runner(False))]
        return _Launch(argv, False, workdir=workdir)
    assert info.bwrap is not None  # available implies found
    binds = module_binds(limits.allowed_modules)
    prefix = python_prefix(info.python)
    if not visible(prefix):
        binds.insert(0, (prefix, prefix))
    if limits.network == "host":
        binds += [(os.path.realpath(p), p) for p in NETWORK_FILES if os.path.exists(p)]
    read, write = os.pipe()
    try:
        os.write(write, runner)  # a few KiB: fits the pipe's buffer
    finally:
        os.close(write)
    argv = sandbox_argv(
        info.bwrap,
        info.python,
        binds=binds,
        tmp_bytes=limits.tmp_mb * 1024 * 1024,
        share_net=limits.network == "host",
        runner_fd=read,
        runner_args=[json.dumps(limits.for_runner(True))],
    )
    if info.drops_root:
        setpriv = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")
        sources = [source for source, _ in binds] + [info.bwrap, setpriv]
        argv = drop_root_argv(info.bwrap, setpriv, sources) + argv
    return _Launch(argv, True, pass_fds=(read,))


# -- checking once per process -------------------------------------------------------------
_checked: dict[tuple[str | None, str, int], tuple[SandboxInfo, float]] = {}
_check_lock = threading.Lock()
_RECHECK_FAILED = 60.0  # seconds before a failed check is tried again (bwrap installed meanwhile)


def check_sandbox(*, refresh: bool = False) -> SandboxInfo:
    """Find bubblewrap and try it once: can code run sandboxed here? A success is kept
    for the life of the process, a failure for a minute.

    Example::

        >>> check_sandbox()
        SandboxInfo(available=True, bwrap='/usr/bin/bwrap', version='0.8.0', ...)
    """
    bwrap, python, euid = _bwrap(), _python(), os.geteuid()
    key = (bwrap, python, euid)
    with _check_lock:
        known, when = _checked.get(key, (None, 0.0))
    if known is not None and not refresh and (known.available or time.monotonic() - when < _RECHECK_FAILED):
        return known
    info = _probe(bwrap, python, euid == 0)
    with _check_lock:
        _checked[key] = (info, time.monotonic())
    if info.available:
        log.info("code sandbox: bubblewrap %s at %s, python %s", info.version, info.bwrap, info.python)
    else:
        log.warning("code sandbox unavailable: %s", info.problem)
    return info


def _probe(bwrap: str | None, python: str, root: bool) -> SandboxInfo:
    def unavailable(problem: str, version: str | None = None) -> SandboxInfo:
        return SandboxInfo(False, bwrap, version, python, root, problem)

    if bwrap is None:
        where = f"{_BWRAP_ENV}={os.environ[_BWRAP_ENV]!r}" if os.environ.get(_BWRAP_ENV) else "PATH"
        return unavailable(f"bubblewrap (bwrap) was not found on {where}")
    try:
        version_text = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout
        help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return unavailable(f"{bwrap} does not run: {exc}")
    version = version_text.strip().rpartition(" ")[2] or None
    if "--disable-userns" not in help_text or "--size" not in help_text:
        return unavailable(f"bubblewrap {version} at {bwrap} is too old: autoflow needs 0.8 or newer", version)
    if root and shutil.which("setpriv") is None:
        return unavailable("the worker runs as root and needs setpriv (util-linux) to drop to nobody", version)
    info = SandboxInfo(True, bwrap, version, python, root)
    try:
        result = _run(info, CodeLimits(timeout=30), codec.dumps({"code": "result = 1"}), lambda: False, None)
    except SandboxError as exc:
        return unavailable(f"bubblewrap {version} at {bwrap} cannot create a sandbox here: {exc}", version)
    if result.value != 1:
        return unavailable(f"the sandbox answered {result.value!r} to a test", version)
    return info


# -- running -------------------------------------------------------------------------------
def run_code(
    code: str,
    data: Any = None,
    limits: CodeLimits | None = None,
    *,
    cancelled: Callable[[], bool] | None = None,
    time_limit: float | None = None,
) -> CodeResult:
    """Run ``code`` on ``data`` (JSON) in a fresh sandbox; return its JSON result.

    The code defines ``main(data)`` (the result is its return value) or sets a global
    ``result``. ``cancelled`` is polled every 50 ms; once it returns True the sandbox is
    killed and :class:`~autoflow.NodeCancelled` raised. ``time_limit`` (seconds) caps
    ``limits.timeout`` (the node's own timeout). Raises :class:`CodeError` when the code
    fails, :class:`CodeTimeout` / :class:`CodeLimitExceeded` when it is killed, and
    :class:`SandboxUnavailable` where it cannot be sandboxed and that is not allowed.
    """
    if not isinstance(code, str) or not code.strip():
        raise InputError("code_execution: 'code' must be a non-empty string of Python")
    limits = limits or CodeLimits()
    try:
        try:
            payload = codec.dumps({"code": code, "data": data})  # what reaches a node is JSON already
        except TypeError:  # a direct call with dataclasses, datetimes...: convert them first
            payload = codec.dumps({"code": code, "data": codec.to_json_value(data, where="the data")})
    except (ValueError, OutputError) as exc:
        raise InputError(f"code_execution: the data is not valid JSON: {exc}") from None
    info = check_sandbox()
    if not info.available and not _truthy(os.environ.get(ALLOW_UNSANDBOXED_ENV)):
        raise SandboxUnavailable(f"code_execution cannot sandbox the code: {info.problem}; {_INSTALL_HINT}")
    return _run(info, limits, payload, cancelled or (lambda: False), time_limit)


def _run(
    info: SandboxInfo, limits: CodeLimits, payload: str, cancelled: Callable[[], bool], time_limit: float | None
) -> CodeResult:
    """Start the runner (sandboxed if ``info.available``), watch it, decode its reply."""
    wall = limits.timeout if time_limit is None else max(0.0, min(limits.timeout, time_limit))
    launch = _launch(info, limits)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            launch.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=launch.workdir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # bwrap's own environment is readable inside
            start_new_session=True,  # one process group to kill
            pass_fds=launch.pass_fds,
        )
    except OSError as exc:
        launch.ended()
        raise SandboxUnavailable(f"cannot start {launch.argv[0]}: {exc}; {_INSTALL_HINT}") from None
    launch.started()
    log.debug("sandbox pid %d started (sandboxed=%s)", proc.pid, launch.sandboxed)
    max_stdout = limits.max_output_kb * 1024 + _ENVELOPE
    stop = _kill_namespace_init if launch.sandboxed else None
    watch = Watch(proc, deadline=started + wall, max_stdout=max_stdout, cancelled=cancelled, stop=stop)
    try:
        ended = watch.run(payload.encode())
    finally:
        launch.ended()
    if ended.stop is Stop.CANCELLED:
        raise NodeCancelled("the run was cancelled: the code's sandbox was killed")
    if ended.stop is Stop.DEADLINE:
        if wall < limits.timeout:
            raise CodeTimeout("the node's timeout ran out while the code ran: its sandbox was killed")
        raise CodeTimeout(f"the code ran longer than its timeout of {limits.timeout:g}s and was killed")
    if ended.stop is Stop.OUTPUT:
        raise CodeLimitExceeded(
            "max_output_kb", f"the code's output passed {limits.max_output_kb} KiB (max_output_kb) and it was killed"
        )
    return _outcome(ended, limits, launch.sandboxed, time.monotonic() - started)


def _kill_namespace_init(leader: int) -> None:
    """SIGKILL the first process below ``leader`` (bwrap) that lives in another PID
    namespace: the sandbox's init, i.e. the interpreter. The kernel then ends everything
    inside the namespace, and each bwrap reaps its child and exits: no zombie is left
    (killing the bwraps first would leave their children to the host's init)."""
    try:
        own = os.readlink("/proc/self/ns/pid")
    except OSError:
        return
    chain = [leader]
    while chain:
        pid = chain.pop(0)
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            try:
                if os.readlink(f"/proc/{child}/ns/pid") != own:
                    os.kill(child, signal.SIGKILL)
                    return
            except OSError:
                continue
            chain.append(child)  # another bwrap of the chain (at most three)


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
