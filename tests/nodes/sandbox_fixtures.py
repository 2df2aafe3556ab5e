"""Helpers of the code_execution tests: the bwrap requirement, a canary secret, and
finding the host processes of a sandbox.

Sandboxed code marks its processes by setting its process name (``/proc/self/comm``,
inherited by forks) to a unique marker; the host sees that name, so a test can tell
whether any process of the sandbox is still alive.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoflow.nodes.sandbox import check_sandbox

__all__ = [
    "MARK_CODE",
    "alive",
    "children_named",
    "marked",
    "need_bwrap",
    "need_service",
    "new_marker",
    "plant_canary",
    "wait_until",
    "zombies",
]

#: Code prefix that names the sandbox's processes after ``data["marker"]``.
MARK_CODE = "open('/proc/self/comm', 'w').write(data['marker'])\n"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_service(reason: str) -> None:
    """Skip locally, fail under CI=true (the pattern of tests/conftest.py)."""
    if _in_ci():
        pytest.fail(f"CI must run the code sandbox tests: {reason}")
    pytest.skip(reason)


@pytest.fixture
def need_bwrap() -> None:
    """A working bubblewrap sandbox (CI installs bubblewrap: .ci/run)."""
    if shutil.which("bwrap") is None:
        need_service("bubblewrap (bwrap) is not installed")
    info = check_sandbox()
    if not info.available:
        need_service(f"bubblewrap cannot sandbox here: {info.problem}")


def plant_canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh secret in the worker's environment (AUTOFLOW_SECRET, REDIS_PASSWORD) and in
    a file under AUTOFLOW_HOME that the worker can read."""
    value = "canary-" + secrets.token_hex(12)
    monkeypatch.setenv("AUTOFLOW_SECRET", value)
    monkeypatch.setenv("REDIS_PASSWORD", value)
    home = Path(os.environ["AUTOFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "secret.txt").write_text(value)
    return value


def new_marker() -> str:
    """A process name (at most 15 characters) unique to one test."""
    return "afsbx" + secrets.token_hex(5)


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, name, parent pid, start time) of every process of the host."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield int(entry), name, int(fields[1]), int(fields[19])


def marked(marker: str) -> set[tuple[int, int]]:
    """(pid, start time) of the live processes (zombies excepted) named ``marker``."""
    return alive({(pid, start) for pid, name, _, start in _processes() if name == marker})


def zombies(marker: str) -> set[tuple[int, int]]:
    """(pid, start time) of the dead but unreaped processes named ``marker``."""
    found = {(pid, start) for pid, name, _, start in _processes() if name == marker}
    return found - alive(found)


def children_named(parent: int, name: str) -> set[tuple[int, int]]:
    """(pid, start time) of the live children of ``parent`` called ``name``."""
    return {(pid, start) for pid, comm, ppid, start in _processes() if ppid == parent and comm == name}


def alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``processes`` still running (same pid and start time, not a zombie)."""
    out = set()
    for pid, start in processes:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[19]) == start and fields[0] != "Z":
            out.add((pid, start))
    return out


def wait_until(condition: object, timeout: float, what: str) -> float:
    """Poll ``condition()`` until true; return the seconds it took; fail after ``timeout``."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started
