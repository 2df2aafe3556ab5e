"""Running untrusted Python code in a fresh process sandboxed by the operating system.

Each call starts ``python -I -S`` under `bubblewrap <https://github.com/containers/bubblewrap>`_
with its own user, PID, network, mount, IPC and UTS namespaces: uid 65534 with no
capabilities, a read-only root holding only ``/usr``, the interpreter and an empty
``/tmp``, no network (not even the host's loopback), a cleared environment, and death
with its parent. rlimits bound memory, CPU time, processes and file sizes; a wall-clock
timeout, the run's cancellation and the node's own timeout kill the whole sandbox.
Input and output travel as JSON over stdin/stdout (see ``sandbox_runner.py``). The errors,
limits and results live in ``sandbox_types.py`` (re-exported here), the reading of the
runner's reply in ``sandbox_reply.py``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoflow import codec
from autoflow.errors import InputError, NodeCancelled, OutputError
from autoflow.nodes.sandbox_bwrap import (
    NETWORK_FILES,
    drop_root_argv,
    module_binds,
    python_prefix,
    sandbox_argv,
    visible,
)
from autoflow.nodes.sandbox_reply import _outcome
from autoflow.nodes.sandbox_types import (
    CodeError,
    CodeLimitExceeded,
    CodeLimits,
    CodeResult,
    CodeTimeout,
    SandboxError,
    SandboxInfo,
    SandboxUnavailable,
)
from autoflow.nodes.sandbox_watch import Stop, Watch

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
