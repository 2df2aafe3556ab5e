"""Chaos tests: SIGKILL worker process groups while runs execute, start replacements,
and check on the store that

* every run reaches ``completed`` (with the right output);
* every node is ``completed`` with exactly one recorded result, the value a correct
  execution computes, and exactly one "completed in" line in the run's log;
* no node started -- neither its accepted execution nor any re-execution -- before
  every parent's accepted result was recorded (the parents' ``finished_at``).

Node *results* are exactly-once (fenced by the claim token) but *executions* are
at-least-once: a killed worker's node runs again once its lease expires. The DAG
(``tests/resources/chaos.py``) therefore audits every execution to a file, so that
duplicates are counted (and bounded by what the kills can explain) and every one of
them is checked against the ordering rule.

Workers are real ``autoflow worker tests.resources.chaos --kind process`` commands in
their own sessions; a kill is ``killpg(SIGKILL)`` of the whole group (the consumer and
its forked Huey workers), followed by a replacement worker.

* ``test_chaos_redis``: 200 runs of the 5-node fan-out/fan-in DAG on a private
  redis-server, 3 workers of 2 processes, one random worker killed about every second
  while runs are unfinished (reliability.md R1).
* ``test_chaos_sqlite``: runs on the embedded SQLite backend, one worker killed mid-node
  and restarted several times; the same invariants, plus ``PRAGMA integrity_check``
  of both database files (R12).

Run with ``pytest tests/test_chaos.py -s`` to see the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

import autoflow as af

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # workers import the DAG as tests.resources.chaos; so do we
    sys.path.insert(0, str(ROOT))

from tests.resources import chaos  # noqa: E402

pytestmark = pytest.mark.slow

MODULE = "tests.resources.chaos"
#: Store timestamps go through datetime (microseconds): allow for that rounding only.
EPS = 2e-6
#: Fast recovery: a dead worker's node is re-queued ~2 s after its last heartbeat.
LEASE = 2.0
REQUEUE = 2.0
MAX_STALLS = 20

# Redis chaos (R1).
REDIS_RUNS = 200
REDIS_GROUPS = 3  # worker commands alive at any time
REDIS_PROCS = 2  # process workers each
REDIS_KILL_EVERY = (0.8, 1.2)  # seconds between kills (seeded)
REDIS_CHAOS_SECONDS = 90.0  # no new kills after this (the runs must then drain)
REDIS_DEADLINE = 170.0
REDIS_MIN_KILLS = 5

# Embedded SQLite (R12).
SQLITE_RUNS = 30
SQLITE_PROCS = 2
SQLITE_KILLS = 4
SQLITE_KILL_AFTER = (0.3, 1.5)  # seconds of work by a (re)started worker before it is killed
SQLITE_SLEEP = "0.1,0.2"  # longer nodes, so every kill lands mid-node
SQLITE_DEADLINE = 100.0

_SCRUBBED_ENV = (
    "AUTOFLOW_REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "AUTOFLOW_SECRET",
    "AUTOFLOW_NAMESPACE",
    "AUTOFLOW_HOME",
    "WORKFLOW_CONCURRENCY",
    "NODE_CONCURRENCY",
    "PYTEST_CURRENT_TEST",
)


# -- worker processes ----------------------------------------------------------------------
def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class WorkerGroup:
    """One ``autoflow worker ... --kind process`` command in its own session: the
    consumer process and its forked Huey workers share one process group."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, procs: int) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed in kill())
        self.started = time.time()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autoflow.cli",
                "worker",
                MODULE,
                "--workers",
                str(procs),
                "--kind",
                "process",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self.died_on_its_own: int | None = None

    def kill(self) -> None:
        """SIGKILL the whole group and wait until none of its processes is left."""
        if self.proc.poll() is not None and self.died_on_its_own is None:
            self.died_on_its_own = self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        finally:
            self._log.close()
        deadline = time.monotonic() + 10
        while _group_members(self.pgid):
            if time.monotonic() > deadline:
                left = _group_members(self.pgid)
                raise AssertionError(f"worker group {self.pgid} survived SIGKILL: {left}")
            time.sleep(0.02)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])


def _worker_env(audit: Path, namespace: str, concurrency: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        AUTOFLOW_NAMESPACE=namespace,
        AUTOFLOW_LEASE_SECONDS=str(LEASE),
        AUTOFLOW_REQUEUE_SECONDS=str(REQUEUE),
        AUTOFLOW_MAX_STALLS=str(MAX_STALLS),
        WORKFLOW_CONCURRENCY=str(concurrency),
        PYTHONUNBUFFERED="1",
        **{chaos.AUDIT_ENV: str(audit)},
        **extra,
    )
    return env


class Fleet:
    """The worker groups of one test, with bookkeeping for kills and clean-up."""

    def __init__(self, env: dict[str, str], log_dir: Path, procs: int) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, procs
        self.alive: list[WorkerGroup] = []
        self.all: list[WorkerGroup] = []
        self.kills = 0

    def start(self) -> WorkerGroup:
        group = WorkerGroup(f"worker-{len(self.all)}", self.env, self.log_dir, self.procs)
        self.alive.append(group)
        self.all.append(group)
        return group

    def kill(self, index: int) -> WorkerGroup:
        """Chaos: SIGKILL the group at ``index`` and start a replacement in its place."""
        victim = self.alive.pop(index)
        victim.kill()
        self.kills += 1
        replacement = self.start()
        self.alive.insert(index, self.alive.pop())
        return replacement

    def check_health(self) -> None:
        """No worker may exit by itself (a crash of the engine, not of our making)."""
        crashed = [g for g in self.all if g.died_on_its_own is not None]
        crashed += [g for g in self.alive if g.proc.poll() is not None]
        if crashed:
            details = "\n".join(f"  {g.name} (exit {g.proc.returncode}):\n{g.tail()}" for g in crashed)
            raise AssertionError(f"worker(s) exited on their own:\n{details}")

    def stop_all(self) -> None:
        while self.alive:
            self.alive.pop().kill()

    def logs(self) -> str:
        return "\n".join(f"  {g.name}:\n{g.tail(15)}" for g in self.all[-4:])


# -- the audit and the invariants ----------------------------------------------------------
@dataclass
class Execution:
    run: str
    node: str
    attempt: int
    pid: int
    start: float
    end: float | None = None
    value: Any = None


def read_audit(path: Path) -> dict[str, Execution]:
    """Every node execution the workers began, by execution id (end set if it returned)."""
    execs: dict[str, Execution] = {}
    if not path.exists():
        return execs
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["ev"] == "start":
            execs[record["x"]] = Execution(
                record["run"], record["node"], record["attempt"], record["pid"], record["ts"]
            )
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["ev"] == "end":
            execution = execs[record["x"]]
            execution.end, execution.value = record["ts"], record["value"]
    return execs


def due_for_kill(path: Path, since: float, work: float) -> bool:
    """True once the worker started at ``since`` has been executing nodes for ``work``
    seconds and is inside a node right now (so that a kill lands mid-node)."""
    mine = [e for e in read_audit(path).values() if e.start > since]
    if not mine or time.time() - min(e.start for e in mine) < work:
        return False
    return any(e.end is None for e in mine)


@dataclass
class Figures:
    runs: int = 0
    completed: int = 0
    nodes: int = 0
    executions: int = 0
    duplicates: int = 0
    interrupted: int = 0  # began, never returned (killed mid-node)
    discarded: int = 0  # returned, but another execution's result was the one recorded
    stalls: int = 0  # lease expiries the store recorded
    problems: list[str] = field(default_factory=list)


def _dag_parents() -> dict[str, tuple[str, ...]]:
    """Parents of each node, from the workflow's own graph (5 nodes, fan-out/fan-in)."""
    graph = chaos.chaos_fan.graph
    parents = {node: tuple(sorted(graph.predecessors(node))) for node in graph.nodes}
    assert parents == chaos.PARENTS, f"the chaos DAG is not the fan-out/fan-in expected: {parents}"
    return parents


def check_invariants(client: af.Client, runs: dict[str, int], audit: Path) -> Figures:
    """Check every run against the store, its log and the execution audit."""
    dag_parents = _dag_parents()
    execs = read_audit(audit)
    by_node: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    for execution in execs.values():
        by_node[(execution.run, execution.node)].append(execution)
    unknown = {e.run for e in execs.values()} - set(runs)
    figures = Figures(runs=len(runs), executions=len(execs))
    problems = figures.problems
    if unknown:
        problems.append(f"executions of runs never submitted: {sorted(unknown)[:5]}")
    for run_id, seed in runs.items():
        info = client.status(run_id)
        want = chaos.expected(seed)
        where = f"run {run_id} (seed {seed})"
        if info.status is not af.RunStatus.COMPLETED:
            summary = {n.id: (n.status.value, n.attempt, n.stall_count) for n in info.nodes.values()}
            problems.append(f"{where}: status {info.status.value}, error {info.error}, nodes {summary}")
            continue
        figures.completed += 1
        if info.output != want[chaos.JOIN]:
            problems.append(f"{where}: output {info.output!r}, expected {want[chaos.JOIN]!r}")
        if set(info.nodes) != set(chaos.NODE_IDS):
            problems.append(f"{where}: nodes {sorted(info.nodes)}, expected {sorted(chaos.NODE_IDS)}")
            continue
        completions = Counter(
            entry.node_id for entry in client.logs(run_id) if entry.message.startswith("completed in ")
        )
        for node_id in chaos.NODE_IDS:
            node = info.nodes[node_id]
            here = f"{where} node {node_id}"
            figures.nodes += 1
            figures.stalls += node.stall_count
            if node.status is not af.NodeStatus.COMPLETED:
                problems.append(f"{here}: status {node.status.value}")
                continue
            if node.output != want[node_id]:
                problems.append(f"{here}: recorded output {node.output!r}, expected {want[node_id]!r}")
            if node.attempt != 1:
                problems.append(f"{here}: attempt {node.attempt} (nodes never raise: a retry means an error)")
            if completions[node_id] != 1:
                problems.append(f"{here}: {completions[node_id]} 'completed in' log lines, expected 1")
            if node.started_at is None or node.finished_at is None:
                problems.append(f"{here}: started_at={node.started_at} finished_at={node.finished_at}")
                continue
            finished = node.finished_at.timestamp()
            # The store's view: the accepted claim began after every parent's result.
            for parent_id in dag_parents[node_id]:
                parent_done = info.nodes[parent_id].finished_at
                if parent_done is not None and node.started_at < parent_done:
                    problems.append(
                        f"{here}: claimed at {node.started_at.timestamp():.6f}, before parent {parent_id} "
                        f"finished at {parent_done.timestamp():.6f}"
                    )
            # The audit's view: every execution, accepted or not.
            runs_of_node = by_node.get((run_id, node_id), [])
            if not runs_of_node:
                problems.append(f"{here}: completed but no execution was audited")
                continue
            figures.duplicates += len(runs_of_node) - 1
            figures.interrupted += sum(1 for e in runs_of_node if e.end is None)
            returned = [e for e in runs_of_node if e.end is not None]
            figures.discarded += max(0, len(returned) - 1)
            if not any(e.end is not None and e.end <= finished + EPS for e in returned):
                problems.append(f"{here}: no audited execution returned before the result was recorded")
            for e in returned:
                if e.value != want[node_id]:
                    problems.append(
                        f"{here}: execution in pid {e.pid} computed {e.value!r}, expected {want[node_id]!r}"
                    )
            for e in runs_of_node:
                if e.attempt != 1:
                    problems.append(f"{here}: execution in pid {e.pid} saw attempt {e.attempt}")
                for parent_id in dag_parents[node_id]:
                    parent_done = info.nodes[parent_id].finished_at
                    if parent_done is None or e.start + EPS < parent_done.timestamp():
                        problems.append(
                            f"{here}: an execution (pid {e.pid}) started at {e.start:.6f}, before parent "
                            f"{parent_id} completed at {parent_done.timestamp() if parent_done else None}"
                        )
    return figures


def _report(backend: str, figures: Figures, kills: int, wall: float, extra: str = "") -> None:
    print(
        f"\n[chaos {backend}] runs completed {figures.completed}/{figures.runs}, nodes {figures.nodes}; "
        f"kills {kills}; executions {figures.executions}, duplicate executions {figures.duplicates} "
        f"(interrupted {figures.interrupted}, returned but discarded {figures.discarded}); "
        f"lease expiries {figures.stalls}; wall time {wall:.1f}s{extra}"
    )


def _assert_clean(figures: Figures, fleet: Fleet) -> None:
    if figures.problems:
        shown = "\n  ".join(figures.problems[:25])
        more = f"\n  ... and {len(figures.problems) - 25} more" if len(figures.problems) > 25 else ""
        pytest.fail(f"{len(figures.problems)} invariant violation(s):\n  {shown}{more}\nworker logs:\n{fleet.logs()}")


def _finished(client: af.Client, runs: dict[str, int]) -> int:
    return sum(1 for info in client.runs(limit=len(runs) + 10) if info.id in runs and info.finished)


# -- the tests -----------------------------------------------------------------------------
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_chaos_redis(redis_url: str, tmp_path: Path) -> None:
    """R1: 200 runs on Redis; a random worker is SIGKILLed about every second."""
    _dag_parents()
    namespace = f"chaos{uuid.uuid4().hex[:10]}"
    audit = tmp_path / "audit.jsonl"
    settings = af.Settings(
        home=tmp_path / "home",
        namespace=namespace,
        lease_seconds=LEASE,
        requeue_seconds=REQUEUE,
        max_stalls=MAX_STALLS,
        workflow_concurrency=REDIS_RUNS,
    )
    env = _worker_env(audit, namespace, REDIS_RUNS, AUTOFLOW_REDIS_URL=redis_url)
    fleet = Fleet(env, tmp_path, REDIS_PROCS)
    rng = random.Random(20240601)
    client = af.Client(redis_url, settings=settings, workers=0)
    try:
        for _ in range(REDIS_GROUPS):
            fleet.start()
        began = time.monotonic()
        runs = {client.execute(chaos.chaos_fan, seed=seed).id: seed for seed in range(REDIS_RUNS)}
        finished = 0
        while True:
            time.sleep(rng.uniform(*REDIS_KILL_EVERY))
            victim = rng.randrange(REDIS_GROUPS)
            finished = _finished(client, runs)
            elapsed = time.monotonic() - began
            if finished == len(runs):
                break
            fleet.check_health()
            if elapsed > REDIS_DEADLINE:
                pytest.fail(
                    f"only {finished}/{len(runs)} runs finished after {elapsed:.0f}s "
                    f"({fleet.kills} kills)\nworker logs:\n{fleet.logs()}"
                )
            if elapsed < REDIS_CHAOS_SECONDS:
                fleet.kill(victim)
        wall = time.monotonic() - began
        fleet.check_health()
        fleet.stop_all()  # no straggler may append to the audit while we read it
        figures = check_invariants(client, runs, audit)
        _report("redis", figures, fleet.kills, wall, f", {REDIS_GROUPS}x{REDIS_PROCS} process workers")
        _assert_clean(figures, fleet)
        assert figures.completed == REDIS_RUNS
        assert figures.nodes == REDIS_RUNS * len(chaos.NODE_IDS)
        assert fleet.kills >= REDIS_MIN_KILLS, f"only {fleet.kills} kills: the chaos did not happen"
        assert figures.interrupted >= 1, "no kill interrupted a node: the chaos did not test recovery"
        # Only a killed worker's in-flight nodes may run again: at most one per process.
        assert figures.duplicates <= fleet.kills * REDIS_PROCS, (
            f"{figures.duplicates} duplicate executions for {fleet.kills} kills of {REDIS_PROCS} processes"
        )
    finally:
        fleet.stop_all()
        client.close()


@pytest.mark.timeout(200)
def test_chaos_sqlite(tmp_path: Path) -> None:
    """R12: the embedded SQLite backend; the worker is SIGKILLed mid-node and restarted."""
    _dag_parents()
    namespace = f"chaos{uuid.uuid4().hex[:10]}"
    home = tmp_path / "home"
    audit = tmp_path / "audit.jsonl"
    settings = af.Settings(
        home=home,
        namespace=namespace,
        lease_seconds=LEASE,
        requeue_seconds=REQUEUE,
        max_stalls=MAX_STALLS,
        workflow_concurrency=SQLITE_RUNS,
    )
    env = _worker_env(audit, namespace, SQLITE_RUNS, AUTOFLOW_HOME=str(home), **{chaos.SLEEP_ENV: SQLITE_SLEEP})
    fleet = Fleet(env, tmp_path, SQLITE_PROCS)
    client = af.Client(settings=settings, workers=0)
    assert client.backend.kind == "sqlite"
    try:
        rng = random.Random(20240602)
        group = fleet.start()
        work = rng.uniform(*SQLITE_KILL_AFTER)
        began = time.monotonic()
        runs = {client.execute(chaos.chaos_fan, seed=seed).id: seed for seed in range(SQLITE_RUNS)}
        mid_run_kills, finished, next_poll = 0, 0, 0.0
        while True:
            if time.monotonic() >= next_poll:
                finished = _finished(client, runs)
                next_poll = time.monotonic() + 0.25
                if finished == len(runs):
                    break
                fleet.check_health()
            elapsed = time.monotonic() - began
            if elapsed > SQLITE_DEADLINE:
                pytest.fail(
                    f"only {finished}/{len(runs)} runs finished after {elapsed:.0f}s "
                    f"({fleet.kills} kills)\nworker logs:\n{fleet.logs()}"
                )
            if fleet.kills < SQLITE_KILLS and due_for_kill(audit, group.started, work):
                mid_run_kills += _finished(client, runs) < len(runs)
                group = fleet.kill(0)
                work = rng.uniform(*SQLITE_KILL_AFTER)
                continue
            time.sleep(0.02)
        wall = time.monotonic() - began
        fleet.check_health()
        fleet.stop_all()
        figures = check_invariants(client, runs, audit)
        integrity = {}
        for name in ("autoflow.db", "autoflow-queue.db"):
            with contextlib.closing(sqlite3.connect(home / name)) as db:
                integrity[name] = db.execute("PRAGMA integrity_check").fetchone()[0]
        _report("sqlite", figures, fleet.kills, wall, f", integrity {integrity}")
        _assert_clean(figures, fleet)
        assert integrity == {"autoflow.db": "ok", "autoflow-queue.db": "ok"}
        assert figures.completed == SQLITE_RUNS
        assert figures.nodes == SQLITE_RUNS * len(chaos.NODE_IDS)
        assert fleet.kills == SQLITE_KILLS and mid_run_kills == SQLITE_KILLS
        assert figures.interrupted >= 1, "no kill interrupted a node: the chaos did not test recovery"
        assert figures.duplicates <= fleet.kills * SQLITE_PROCS, (
            f"{figures.duplicates} duplicate executions for {fleet.kills} kills of {SQLITE_PROCS} processes"
        )
    finally:
        fleet.stop_all()
        client.close()
