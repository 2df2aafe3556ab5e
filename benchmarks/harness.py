"""The benchmarks' plumbing: child processes, a private redis-server, one backend's setup.

Used by ``benchmarks/bench.py``; see ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import autoflow as af
from benchmarks import rawhuey

__all__ = [
    "CHAINS",
    "CHAIN_LEN",
    "WORKERS",
    "Child",
    "RedisServer",
    "Setup",
    "check_loopback",
    "git_revision",
    "loadavg",
    "open_setup",
    "pct",
    "proc_cpu",
    "proc_memory",
    "proc_tree",
    "profiled",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAINS, CHAIN_LEN = 200, 10  # the required shape: 200 concurrent 10-step chains
WORKERS = 2
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Variables that would point a child process at some other backend.
_SCRUB = (
    "AUTOFLOW_REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "AUTOFLOW_HOME",
    "AUTOFLOW_NAMESPACE",
    "AUTOFLOW_SECRET",
    "WORKFLOW_CONCURRENCY",
    "NODE_CONCURRENCY",
)


# -- small helpers ----------------------------------------------------------------------------
def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:
    """In the child: SIGKILL when the benchmark process dies (Linux), so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a process worker's children do the work)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += parents.get(p, [])
    return tree


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, and ``Pss``: the proportional set size of
    it and its descendants (pages shared after a fork counted once), in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    pss = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    out["Pss"] = pss / 1024
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its live descendants."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                return float("nan")
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Child:
    """A child process with its output in a log file; stopped by ``stop()`` (idempotent)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir: Path, children: list[Child]) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        self.child = Child("redis-server", argv, dict(os.environ), workdir)
        children.append(self.child)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            self.child.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}:\n{self.child.tail()}")
            time.sleep(0.05)


def check_loopback(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return
    if parsed.scheme not in ("redis", "rediss") or parsed.hostname not in LOOPBACK:
        raise SystemExit(f"--redis must be a loopback redis:// or unix:// URL, got {url!r}")


def wait_until(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    children: Sequence[Child] = (),
    interval: float = 0.005,
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_ready(base: str, children: Sequence[Child], timeout: float = 30) -> None:
    """Wait until an ``autoflow serve`` at ``base`` answers ``/readyz`` with 200."""
    import httpx  # only the API benchmarks need it

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, "autoflow serve", children, interval=0.1)


# -- one backend's setup ----------------------------------------------------------------------
@dataclass
class Setup:
    """Everything one backend's measurements need: the Huey, the client, the processes."""

    kind: str  # "redis" or "sqlite"
    namespace: str
    huey: Any
    starter: Any  # the raw chain task, bound to ``huey`` (the consumer has the same task)
    client: af.Client
    raw_proc: Child
    af_proc: Child
    redis_pid: int | None = None  # the private redis-server, for its CPU time

    @property
    def procs(self) -> tuple[Child, Child]:
        return (self.raw_proc, self.af_proc)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@contextlib.contextmanager
def open_setup(
    kind: str,
    redis_url: str | None,
    tmp: Path,
    children: list[Child],
    redis_pid: int | None = None,
    worker_modules: Sequence[str] = (),
    worker_kind: str = "thread",
) -> Iterator[Setup]:
    """Both workers (raw Huey and autoflow) with ``WORKERS`` workers of ``worker_kind``
    (``thread``: one process; ``process``: a process each), and a client."""
    ns = f"bench_{uuid.uuid4().hex[:8]}"
    raw_name = f"{ns}_raw"
    if kind == "redis":
        assert redis_url
        target = redis_url
        raw_env = {"BENCH_BACKEND": "redis", "BENCH_REDIS_URL": redis_url, "BENCH_HUEY_NAME": raw_name}
        af_env = {"AUTOFLOW_REDIS_URL": redis_url}
        client_url = redis_url
        settings = af.Settings(redis_url=redis_url, namespace=ns, workflow_concurrency=CHAINS)
    else:
        home = tmp / f"sqlite-{ns}"
        home.mkdir()
        target = str(home / "raw-huey.db")
        raw_env = {"BENCH_BACKEND": "sqlite", "BENCH_SQLITE_FILE": target, "BENCH_HUEY_NAME": raw_name}
        af_env = {"AUTOFLOW_HOME": str(home)}
        client_url = f"sqlite:///{home / 'autoflow.db'}"
        settings = af.Settings(home=home, namespace=ns, workflow_concurrency=CHAINS)
    af_env.update({"AUTOFLOW_NAMESPACE": ns, "WORKFLOW_CONCURRENCY": str(CHAINS)})
    raw_env["BENCH_WORKER_KIND"] = worker_kind

    huey = rawhuey.make_huey(kind, target, raw_name)
    starter = huey.task()(rawhuey.step.func)
    client = af.Client(client_url, workers=0, settings=settings)
    raw_proc = Child(f"{kind}-raw-huey", [PYTHON, "-m", "benchmarks.rawhuey"], _child_env(raw_env), tmp)
    children.append(raw_proc)
    af_argv = [
        PYTHON,
        "-m",
        "autoflow.cli",
        "worker",
        "benchmarks.flows",
        *worker_modules,
        "--workers",
        str(WORKERS),
        "--kind",
        worker_kind,
    ]
    af_proc = Child(f"{kind}-autoflow-worker", af_argv, _child_env(af_env), tmp)
    children.append(af_proc)
    setup = Setup(kind, ns, huey, starter, client, raw_proc, af_proc, redis_pid if kind == "redis" else None)
    try:
        yield setup
    finally:
        for child in (af_proc, raw_proc):
            child.stop()
        client.close()
        if kind == "redis":
            _delete_keys(redis_url or "", ns)


def _delete_keys(url: str, ns: str) -> None:
    """Remove this invocation's keys (matters only for a --redis server we did not start)."""
    import redis

    with contextlib.suppress(Exception):
        r = redis.Redis.from_url(url)
        for pattern in (f"{ns}:*", f"huey.*{ns}_*"):
            batch = list(r.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), 500):
                r.delete(*batch[i : i + 500])
        r.close()


@contextlib.contextmanager
def profiled(child: Child, out: Path | None, rate: int = 250) -> Iterator[None]:
    """py-spy (if installed) samples ``child`` while the block runs: a flame graph (SVG)
    and the collapsed stacks (text, for grep), both in ``out``."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if out is None or not Path(spy).exists():
        if out is not None:
            print("py-spy is not installed (pip install py-spy); not profiling", file=sys.stderr)
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(child.pid),
                "-r",
                str(rate),
                "-f",
                fmt,
                "-o",
                str(out / f"{child.name}.{ext}"),
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,
        )
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"))
    ]
    time.sleep(0.5)  # let py-spy attach
    try:
        yield
    finally:
        for spy_proc in spies:
            spy_proc.send_signal(signal.SIGINT)
        for spy_proc in spies:
            try:
                spy_proc.wait(30)
            except subprocess.TimeoutExpired:
                spy_proc.kill()


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return rev.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
