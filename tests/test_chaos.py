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
* ``test_chaos_flow_redis`` / ``test_chaos_flow_sqlite``: the same kills on a DAG with
  control flow (``tests/resources/chaos_flow.py``): a ``-> bool`` condition with
  ``when=cond`` / ``when=~cond`` branches and a join, and a ``.map`` (``max_parallel=3``)
  over a list made at run time, consumed by a node after it. On top of the invariants
  above: the branch not taken is ``skipped`` and never executed, the map's output is
  its items' results in item order (``items_total == items_done``), and no item
  execution started before the map node's parents completed.
* ``test_a_durable_delay_survives_a_worker_restart`` (SQLite, Redis): the only worker is
  SIGKILLed while ``af.delay`` nodes wait; a new worker completes the runs, the node
  after each delay runs exactly once and never before the delay's deadline.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest

import autoflow as af

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # workers import the DAG as tests.resources.chaos; so do we
    sys.path.insert(0, str(ROOT))

from tests.resources import chaos, chaos_flow  # noqa: E402

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

# Control flow under chaos: branches, a join, a map.
FLOW_MODULE = "tests.resources.chaos_flow"

# Redis: the same fleet and kill cadence as test_chaos_redis, fewer (but bigger) runs.
FLOW_REDIS_RUNS = 80
FLOW_REDIS_CHAOS_SECONDS = 30.0
FLOW_REDIS_DEADLINE = 100.0

# Embedded SQLite: the same kill cadence as test_chaos_sqlite.
FLOW_SQLITE_RUNS = 36
FLOW_SQLITE_DEADLINE = 80.0

# A durable delay across a worker restart.
DELAY_SHORT = 3.0  # its deadline passes while no worker is alive
DELAY_LONG = 8.0  # its deadline is still ahead when the new worker starts
DELAY_DEADLINE = 40.0

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

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, procs: int, module: str = MODULE) -> None:
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
                module,
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

    def __init__(self, env: dict[str, str], log_dir: Path, procs: int, module: str = MODULE) -> None:
        self.env, self.log_dir, self.procs, self.module = env, log_dir, procs, module
        self.alive: list[WorkerGroup] = []
        self.all: list[WorkerGroup] = []
        self.kills = 0

    def start(self) -> WorkerGroup:
        group = WorkerGroup(f"worker-{len(self.all)}", self.env, self.log_dir, self.procs, self.module)
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


# -- a deployment: store, client, workers --------------------------------------------------
@dataclass
class Deployment:
    """One test's store, client (which runs no nodes) and fleet of worker commands."""

    client: af.Client
    fleet: Fleet
    home: Path  # the embedded SQLite backend's files (and the client's home on Redis)
    audit: Path  # the execution audit the workers append to


@contextlib.contextmanager
def _deploy(
    tmp_path: Path,
    prefix: str,
    url: str | None,
    procs: int,
    module: str,
    concurrency: int,
    client_concurrency: int | None = None,
    **extra_env: str,
) -> Iterator[Deployment]:
    """A namespace of our own (``prefix`` + random) on Redis at ``url``, or on embedded
    SQLite under ``tmp_path / "home"`` if None; fast recovery settings for the client
    and the workers (``concurrency`` runs at once; the client keeps its default unless
    ``client_concurrency`` is given). The fleet is not started; on the way out every
    worker is SIGKILLed and the client closed."""
    namespace = f"{prefix}{uuid.uuid4().hex[:10]}"
    home = tmp_path / "home"
    audit = tmp_path / "audit.jsonl"
    own: dict[str, Any] = {} if client_concurrency is None else {"workflow_concurrency": client_concurrency}
    settings = af.Settings(
        home=home, namespace=namespace, lease_seconds=LEASE, requeue_seconds=REQUEUE, max_stalls=MAX_STALLS, **own
    )
    store_env = {"AUTOFLOW_HOME": str(home)} if url is None else {"AUTOFLOW_REDIS_URL": url}
    fleet = Fleet(_worker_env(audit, namespace, concurrency, **store_env, **extra_env), tmp_path, procs, module)
    client = af.Client(url, settings=settings, workers=0)
    try:
        assert client.backend.kind == ("sqlite" if url is None else "redis")
        yield Deployment(client, fleet, home, audit)
    finally:
        fleet.stop_all()
        client.close()


# -- the DAGs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dag:
    """A workflow the chaos tests run (the workers import it from ``module``), and what a
    correct execution of it records."""

    name: str  # in the report; without the dash, the namespace prefix
    module: str
    workflow: Any
    parents: dict[str, tuple[str, ...]]  # of every node, as the graph must have them
    node_ids: tuple[str, ...]
    output: str  # the node whose output is the run's
    expected: Callable[[int], chaos_flow.Expected]  # by seed
    control_flow: bool  # a condition (one side skipped) and a map (chaos_flow.MAPPED)


def _fan_expected(seed: int) -> chaos_flow.Expected:
    return chaos_flow.Expected({**chaos.expected(seed)}, skipped=(), items=[], item_outputs=[], took_high=False)


#: source -> 3 branches -> join (``tests/resources/chaos.py``).
FAN = Dag("chaos", MODULE, chaos.chaos_fan, chaos.PARENTS, chaos.NODE_IDS, chaos.JOIN, _fan_expected, False)
#: A branch with a join and a map, then a node after both (``tests/resources/chaos_flow.py``).
FLOW = Dag(
    "chaos-flow",
    FLOW_MODULE,
    chaos_flow.chaos_flow,
    chaos_flow.PARENTS,
    chaos_flow.NODE_IDS,
    chaos_flow.TOTAL,
    chaos_flow.expected,
    True,
)


def _dag_parents(dag: Dag) -> dict[str, tuple[str, ...]]:
    """Parents of each node, from the workflow's own graph (branch edges included)."""
    graph = dag.workflow.graph
    parents = {node: tuple(sorted(graph.predecessors(node))) for node in graph.nodes}
    assert parents == dag.parents, f"the {dag.name} DAG is not the one expected: {parents}"
    return parents


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
    # Control flow only:
    items: int = 0  # map items checked
    item_duplicates: int = 0  # duplicate executions among them (also in ``duplicates``)
    skipped: int = 0  # nodes skipped (the branch not taken)
    took_high: int = 0  # runs whose condition was true
    peak_items: int = 0  # most item executions of one run seen running at once


def _peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    peak = live = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _check_executions(
    figures: Figures,
    here: str,
    runs_of_node: list[Execution],
    value: Any,
    finished: float,
    parents: dict[str, datetime | None],
) -> int:
    """The audited executions of a node (or map item) whose accepted result was recorded
    at ``finished``: at least one, all computing ``value``, none started before a parent
    was settled (``parents``: their ``finished_at``, None if never). Returns the
    duplicate executions."""
    problems = figures.problems
    if not runs_of_node:
        problems.append(f"{here}: completed but no execution was audited")
        return 0
    returned = [e for e in runs_of_node if e.end is not None]
    figures.duplicates += len(runs_of_node) - 1
    figures.interrupted += len(runs_of_node) - len(returned)
    figures.discarded += max(0, len(returned) - 1)
    if not any(e.end is not None and e.end <= finished + EPS for e in returned):
        ends = sorted(e.end for e in returned if e.end is not None)
        problems.append(
            f"{here}: no audited execution returned before the result was recorded at {finished:.6f}: {ends}"
        )
    for e in returned:
        if e.value != value:
            problems.append(f"{here}: execution in pid {e.pid} computed {e.value!r}, expected {value!r}")
    for e in runs_of_node:
        if e.attempt != 1:
            problems.append(f"{here}: execution in pid {e.pid} saw attempt {e.attempt}")
        for parent_id, parent_done in parents.items():
            if parent_done is None or e.start + EPS < parent_done.timestamp():
                problems.append(
                    f"{here}: an execution (pid {e.pid}) started at {e.start:.6f}, before parent "
                    f"{parent_id} finished at {_ts(parent_done)}"
                )
    return len(runs_of_node) - 1


def check_invariants(client: af.Client, runs: dict[str, int], audit: Path, dag: Dag) -> Figures:
    """Check every run of ``dag`` against the store, its log and the execution audit."""
    dag_parents = _dag_parents(dag)
    execs = read_audit(audit)
    by_node: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    for execution in execs.values():
        by_node[(execution.run, execution.node)].append(execution)
    figures = Figures(runs=len(runs), executions=len(execs))
    problems = figures.problems
    unknown = {e.run for e in execs.values()} - set(runs)
    if unknown:
        problems.append(f"executions of runs never submitted: {sorted(unknown)[:5]}")
    for run_id, seed in runs.items():
        info = client.status(run_id)
        want = dag.expected(seed)
        side = f", {'high' if want.took_high else 'low'} side" if dag.control_flow else ""
        where = f"run {run_id} (seed {seed}{side})"
        if info.status is not af.RunStatus.COMPLETED:
            summary = {n.id: (n.status.value, n.attempt, n.stall_count) for n in info.nodes.values()}
            problems.append(f"{where}: status {info.status.value}, error {info.error}, nodes {summary}")
            continue
        figures.completed += 1
        figures.took_high += want.took_high
        if info.output != want.outputs[dag.output]:
            problems.append(f"{where}: output {info.output!r}, expected {want.outputs[dag.output]!r}")
        if set(info.nodes) != set(dag.node_ids):
            problems.append(f"{where}: nodes {sorted(info.nodes)}, expected {sorted(dag.node_ids)}")
            continue
        logs = client.logs(run_id)
        completions = Counter(entry.node_id for entry in logs if entry.message.startswith("completed in "))
        expansions = Counter(entry.node_id for entry in logs if entry.message.startswith("mapping over "))
        item_ids = [f"{chaos_flow.MAPPED}[{i}]" for i in range(len(want.items))]
        executed = {node_id for node_id in want.outputs if node_id != chaos_flow.MAPPED} | set(item_ids)
        strays = {node for (run, node) in by_node if run == run_id} - executed
        if strays:
            problems.append(f"{where}: executions of {sorted(strays)}, which must not run")
        stray_lines = {node for node in completions if node is not None} - executed
        if stray_lines:
            problems.append(f"{where}: 'completed in' log lines of {sorted(stray_lines)}, which must not run")

        for node_id in dag.node_ids:
            node = info.nodes[node_id]
            here = f"{where} node {node_id}"
            figures.nodes += 1
            figures.stalls += node.stall_count
            if node_id in want.skipped:
                figures.skipped += 1
                if node.status is not af.NodeStatus.SKIPPED or node.output is not None:
                    problems.append(f"{here}: status {node.status.value}, output {node.output!r}; expected skipped")
                if by_node.get((run_id, node_id)):
                    problems.append(f"{here}: skipped, yet executed {len(by_node[(run_id, node_id)])} time(s)")
                continue
            if node.status is not af.NodeStatus.COMPLETED:
                problems.append(f"{here}: status {node.status.value}")
                continue
            if node.output != want.outputs[node_id]:
                problems.append(f"{here}: recorded output {node.output!r}, expected {want.outputs[node_id]!r}")
            if node.attempt != 1:
                problems.append(f"{here}: attempt {node.attempt} (nodes never raise: a retry means an error)")
            # Exactly one "completed in" line: the node's, or a map node's items' (not its own).
            mapped = node_id == chaos_flow.MAPPED
            for kind, logged in [("item", i) for i in item_ids] if mapped else [("node", node_id)]:
                if completions[logged] != 1:
                    problems.append(
                        f"{where} {kind} {logged}: {completions[logged]} 'completed in' log lines, expected 1"
                    )
            if node.started_at is None or node.finished_at is None:
                problems.append(f"{here}: started_at={node.started_at} finished_at={node.finished_at}")
                continue
            parents = {parent_id: info.nodes[parent_id].finished_at for parent_id in dag_parents[node_id]}
            # The store's view: the accepted claim began after every parent was settled.
            for parent_id, parent_done in parents.items():
                if parent_done is None or node.started_at < parent_done:
                    problems.append(
                        f"{here}: claimed at {node.started_at.timestamp():.6f}, before parent {parent_id} "
                        f"finished at {_ts(parent_done)}"
                    )
            # The audit's view: every execution, accepted or not.
            if not mapped:
                _check_executions(
                    figures,
                    here,
                    by_node.get((run_id, node_id), []),
                    want.outputs[node_id],
                    node.finished_at.timestamp(),
                    parents,
                )
                continue
            # The map node: its items ran, its result is their list in item order.
            if (node.items_total, node.items_done) != (len(want.items), len(want.items)):
                problems.append(
                    f"{here}: items_total {node.items_total}, items_done {node.items_done}, "
                    f"expected {len(want.items)} of {len(want.items)}"
                )
            if expansions[node_id] != 1:
                problems.append(f"{here}: expanded {expansions[node_id]} times, expected once")
            if by_node.get((run_id, node_id)):
                problems.append(f"{here}: the map node itself executed user code")
            # An item's accepted execution returned before its result was recorded, hence
            # before the node after the map was claimed. (Not before the map's own
            # finished_at: the last item's transition stamps it with a clock read taken
            # before the atomic write, which may precede another item's completion.)
            consumer = info.nodes[chaos_flow.TOTAL].started_at
            recorded_by = consumer.timestamp() if consumer is not None else node.finished_at.timestamp()
            for i, item_id in enumerate(item_ids):
                figures.items += 1
                figures.item_duplicates += _check_executions(
                    figures,
                    f"{where} item {item_id}",
                    by_node.get((run_id, item_id), []),
                    want.item_outputs[i],
                    recorded_by,
                    parents,  # an item's parents are the map node's
                )
            # max_parallel: item executions that returned never overlapped more than the
            # bound, give or take a duplicate (a stalled execution may outlive its lease).
            spans = [(e.start, e.end) for i in item_ids for e in by_node.get((run_id, i), []) if e.end is not None]
            dups = sum(max(0, len(by_node.get((run_id, i), [])) - 1) for i in item_ids)
            peak = _peak(spans)
            figures.peak_items = max(figures.peak_items, peak)
            if peak > chaos_flow.MAX_PARALLEL + dups:
                problems.append(f"{here}: {peak} items ran at once, max_parallel={chaos_flow.MAX_PARALLEL}")
    return figures


def _report(dag: Dag, backend: str, figures: Figures, kills: int, wall: float, extra: str = "") -> None:
    f = figures
    if dag.control_flow:
        runs = f"{f.completed}/{f.runs} ({f.took_high} took the high side); nodes {f.nodes} ({f.skipped} skipped), "
        runs += f"map items {f.items}"
        items, peak = f"{f.item_duplicates} of items; ", f"; peak items at once {f.peak_items}"
    else:
        runs, items, peak = f"{f.completed}/{f.runs}, nodes {f.nodes}", "", ""
    print(
        f"\n[{dag.name} {backend}] runs completed {runs}; kills {kills}; executions {f.executions}, "
        f"duplicate executions {f.duplicates} ({items}interrupted {f.interrupted}, returned but discarded "
        f"{f.discarded}); lease expiries {f.stalls}{peak}; wall time {wall:.1f}s{extra}"
    )


def _assert_clean(figures: Figures, fleet: Fleet) -> None:
    if figures.problems:
        shown = "\n  ".join(figures.problems[:25])
        more = f"\n  ... and {len(figures.problems) - 25} more" if len(figures.problems) > 25 else ""
        pytest.fail(f"{len(figures.problems)} invariant violation(s):\n  {shown}{more}\nworker logs:\n{fleet.logs()}")


def _check_totals(dag: Dag, figures: Figures, runs: dict[str, int], count: int) -> None:
    assert figures.completed == count
    assert figures.nodes == count * len(dag.node_ids)
    if dag.control_flow:
        assert figures.items == sum(len(dag.expected(seed).items) for seed in runs.values())
        assert 0 < figures.took_high < len(runs), "the condition did not go both ways"


def _finished(client: af.Client, runs: dict[str, Any]) -> int:
    return sum(1 for info in client.runs(limit=len(runs) + 10) if info.id in runs and info.finished)


def _integrity(home: Path) -> dict[str, str]:
    """``PRAGMA integrity_check`` of both database files of the embedded SQLite backend."""
    integrity = {}
    for name in ("autoflow.db", "autoflow-queue.db"):
        with contextlib.closing(sqlite3.connect(home / name)) as db:
            integrity[name] = db.execute("PRAGMA integrity_check").fetchone()[0]
    return integrity


# -- the chaos: whom to kill, and when ----------------------------------------------------
class Scenario:
    """How a chaos test starts its workers and kills them, on which backend; what it
    reports and checks on top of the invariants. :func:`_drive` calls ``pause`` at the
    top of every round, polls the runs if ``poll_every`` seconds have passed since the
    last poll, then calls ``strike`` (which kills a worker, or not, and may idle)."""

    backend: str
    url: str | None
    procs: int  # processes per worker command
    poll_every: float

    def start(self, d: Deployment) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        pass

    def strike(self, d: Deployment, runs: dict[str, int], elapsed: float) -> None:
        raise NotImplementedError

    def inspect(self, d: Deployment) -> str:
        """After the runs (and all workers) are over: what the report adds."""
        raise NotImplementedError

    def check_store(self) -> None:
        pass

    def check_kills(self, fleet: Fleet) -> None:
        raise NotImplementedError


class RedisScenario(Scenario):
    """R1: REDIS_GROUPS worker commands on Redis; about every second (REDIS_KILL_EVERY,
    seeded) a random one is SIGKILLed and replaced, for the first ``chaos_seconds`` (then
    the runs must drain)."""

    backend, procs = "redis", REDIS_PROCS
    poll_every = 0.0  # after every pause

    def __init__(self, url: str, seed: int, chaos_seconds: float) -> None:
        self.url, self.rng, self.chaos_seconds = url, random.Random(seed), chaos_seconds
        self.victim = 0

    def start(self, d: Deployment) -> None:
        for _ in range(REDIS_GROUPS):
            d.fleet.start()

    def pause(self) -> None:
        time.sleep(self.rng.uniform(*REDIS_KILL_EVERY))
        self.victim = self.rng.randrange(REDIS_GROUPS)

    def strike(self, d: Deployment, runs: dict[str, int], elapsed: float) -> None:
        if elapsed < self.chaos_seconds:
            d.fleet.kill(self.victim)

    def inspect(self, d: Deployment) -> str:
        return f", {REDIS_GROUPS}x{REDIS_PROCS} process workers"

    def check_kills(self, fleet: Fleet) -> None:
        assert fleet.kills >= REDIS_MIN_KILLS, f"only {fleet.kills} kills: the chaos did not happen"


class SQLiteScenario(Scenario):
    """R12: one worker command on embedded SQLite, SIGKILLed mid-node after a random
    stretch of work (SQLITE_KILL_AFTER, seeded) and replaced, SQLITE_KILLS times; then
    ``PRAGMA integrity_check`` of both database files."""

    backend, url, procs = "sqlite", None, SQLITE_PROCS
    poll_every = 0.25

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mid_run_kills = 0
        self.integrity: dict[str, str] = {}

    def start(self, d: Deployment) -> None:
        self.group = d.fleet.start()
        self.work = self.rng.uniform(*SQLITE_KILL_AFTER)

    def strike(self, d: Deployment, runs: dict[str, int], elapsed: float) -> None:
        if d.fleet.kills < SQLITE_KILLS and due_for_kill(d.audit, self.group.started, self.work):
            self.mid_run_kills += _finished(d.client, runs) < len(runs)
            self.group = d.fleet.kill(0)
            self.work = self.rng.uniform(*SQLITE_KILL_AFTER)
        else:
            time.sleep(0.02)

    def inspect(self, d: Deployment) -> str:
        self.integrity = _integrity(d.home)
        return f", integrity {self.integrity}"

    def check_store(self) -> None:
        assert self.integrity == {"autoflow.db": "ok", "autoflow-queue.db": "ok"}

    def check_kills(self, fleet: Fleet) -> None:
        assert fleet.kills == SQLITE_KILLS and self.mid_run_kills == SQLITE_KILLS


def _drive(
    d: Deployment, scenario: Scenario, workflow: Any, count: int, deadline: float
) -> tuple[dict[str, int], float]:
    """Start the workers, submit ``count`` runs (seeds 0 to count - 1) and kill workers
    as ``scenario`` says until every run has finished. Returns the runs (id -> seed) and
    the wall time."""
    fleet = d.fleet
    scenario.start(d)
    began = time.monotonic()
    runs = {d.client.execute(workflow, seed=seed).id: seed for seed in range(count)}
    finished, next_poll = 0, 0.0
    while True:
        scenario.pause()
        if time.monotonic() >= next_poll:
            finished = _finished(d.client, runs)
            next_poll = time.monotonic() + scenario.poll_every
            if finished == len(runs):
                break
            fleet.check_health()
        elapsed = time.monotonic() - began
        if elapsed > deadline:
            pytest.fail(
                f"only {finished}/{len(runs)} runs finished after {elapsed:.0f}s "
                f"({fleet.kills} kills)\nworker logs:\n{fleet.logs()}"
            )
        scenario.strike(d, runs, elapsed)
    return runs, time.monotonic() - began


def _chaos_test(dag: Dag, scenario: Scenario, tmp_path: Path, count: int, deadline: float, **extra_env: str) -> None:
    """``count`` runs of ``dag`` under ``scenario``; then every invariant, the figures and the
    bounds: the kills happened, interrupted nodes, and only a killed worker's in-flight
    nodes ran again (at most one per process)."""
    _dag_parents(dag)
    with _deploy(
        tmp_path, dag.name.replace("-", ""), scenario.url, scenario.procs, dag.module, count, count, **extra_env
    ) as d:
        runs, wall = _drive(d, scenario, dag.workflow, count, deadline)
        fleet = d.fleet
        fleet.check_health()
        fleet.stop_all()  # no straggler may append to the audit while we read it
        figures = check_invariants(d.client, runs, d.audit, dag)
        _report(dag, scenario.backend, figures, fleet.kills, wall, scenario.inspect(d))
        _assert_clean(figures, fleet)
        scenario.check_store()
        _check_totals(dag, figures, runs, count)
        scenario.check_kills(fleet)
        assert figures.interrupted >= 1, "no kill interrupted a node: the chaos did not test recovery"
        # Only a killed worker's in-flight nodes may run again: at most one per process.
        assert figures.duplicates <= fleet.kills * scenario.procs, (
            f"{figures.duplicates} duplicate executions for {fleet.kills} kills of {scenario.procs} processes"
        )


# -- the tests -----------------------------------------------------------------------------
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_chaos_redis(redis_url: str, tmp_path: Path) -> None:
    """R1: 200 runs on Redis; a random worker is SIGKILLed about every second."""
    _chaos_test(FAN, RedisScenario(redis_url, 20240601, REDIS_CHAOS_SECONDS), tmp_path, REDIS_RUNS, REDIS_DEADLINE)


@pytest.mark.timeout(200)
def test_chaos_sqlite(tmp_path: Path) -> None:
    """R12: the embedded SQLite backend; the worker is SIGKILLed mid-node and restarted."""
    sleep = {chaos.SLEEP_ENV: SQLITE_SLEEP}
    _chaos_test(FAN, SQLiteScenario(20240602), tmp_path, SQLITE_RUNS, SQLITE_DEADLINE, **sleep)


@pytest.mark.redis
@pytest.mark.timeout(170)
def test_chaos_flow_redis(redis_url: str, tmp_path: Path) -> None:
    """Branches, a join and a map on Redis; a random worker is SIGKILLed about every second."""
    scenario = RedisScenario(redis_url, 20240611, FLOW_REDIS_CHAOS_SECONDS)
    _chaos_test(FLOW, scenario, tmp_path, FLOW_REDIS_RUNS, FLOW_REDIS_DEADLINE)


@pytest.mark.timeout(150)
def test_chaos_flow_sqlite(tmp_path: Path) -> None:
    """Branches, a join and a map on embedded SQLite; the worker is SIGKILLed mid-node
    and restarted."""
    _chaos_test(FLOW, SQLiteScenario(20240612), tmp_path, FLOW_SQLITE_RUNS, FLOW_SQLITE_DEADLINE)


# -- a durable delay across a worker restart -----------------------------------------------
def _wait_for(what: str, check: Any, timeout: float, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\nworker logs:\n{fleet.logs()}")
        fleet.check_health()
        time.sleep(0.05)


def _delay_states(client: af.Client, runs: dict[str, Any]) -> dict[str, tuple[af.RunStatus, af.NodeInfo]]:
    """Each run's status and its delay node."""
    infos = {run_id: client.status(run_id) for run_id in runs}
    return {run_id: (info.status, info.nodes[chaos_flow.DELAY]) for run_id, info in infos.items()}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_durable_delay_survives_a_worker_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``before -> af.delay(seconds) -> after``, twice: the only worker is SIGKILLed while
    both delays wait; a new one starts after the short delay's deadline and before the
    long one's. Both runs complete, ``after`` runs exactly once and never before its
    deadline (the delay's start, as recorded, plus its seconds)."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    with _deploy(tmp_path, "chaosdelay", url, SQLITE_PROCS, FLOW_MODULE, 10) as d:
        client, fleet = d.client, d.fleet
        began = time.monotonic()
        first = fleet.start()
        seconds = {
            client.execute(chaos_flow.chaos_delay, seed=seed, seconds=delay).id: delay
            for seed, delay in enumerate((DELAY_SHORT, DELAY_LONG))
        }
        seeds = {run_id: seed for seed, run_id in enumerate(seconds)}
        short_run, long_run = seconds
        _wait_for(
            "both delays to wait",
            lambda: all(n.status is af.NodeStatus.WAITING for _, n in _delay_states(client, seconds).values()),
            DELAY_DEADLINE,
            fleet,
        )
        # A delay counts from when its node started: its deadline is at least this.
        deadlines = {}
        for run_id, (_, node) in _delay_states(client, seconds).items():
            assert node.started_at is not None
            deadlines[run_id] = node.started_at.timestamp() + seconds[run_id]
        fleet.alive.remove(first)
        first.kill()  # SIGKILL of the worker's whole process group
        fleet.kills += 1
        killed_at = time.time()
        assert killed_at < deadlines[short_run], "the worker was killed after the short delay was over"
        time.sleep(max(0.0, deadlines[short_run] + 0.5 - time.time()))
        # No worker: past its deadline, the short delay is still parked, the run unfinished.
        parked = {
            run_id: (status.value, node.status.value)
            for run_id, (status, node) in _delay_states(client, seconds).items()
        }
        assert set(parked.values()) == {("running", "waiting")}, parked
        restarted_at = time.time()
        fleet.start()
        _wait_for("the runs to finish", lambda: _finished(client, seconds) == len(seconds), DELAY_DEADLINE, fleet)
        wall = time.monotonic() - began
        fleet.check_health()
        fleet.stop_all()  # no straggler may append to the audit while we read it

        execs = read_audit(d.audit)
        problems = []
        late = {}
        for run_id, delay in seconds.items():
            info = client.status(run_id)
            want = chaos_flow.expected_delay(seeds[run_id])
            where = f"run {run_id} (delay {delay}s)"
            if info.status is not af.RunStatus.COMPLETED:
                problems.append(f"{where}: status {info.status.value}, error {info.error}")
                continue
            if info.output != want[chaos_flow.AFTER]:
                problems.append(f"{where}: output {info.output!r}, expected {want[chaos_flow.AFTER]!r}")
            for node_id in chaos_flow.DELAY_NODE_IDS:
                node = info.nodes[node_id]
                if node.status is not af.NodeStatus.COMPLETED or node.output != want[node_id]:
                    problems.append(f"{where} node {node_id}: {node.status.value}, output {node.output!r}")
            completions = Counter(e.node_id for e in client.logs(run_id) if e.message.startswith("completed in "))
            for node_id in (chaos_flow.BEFORE, chaos_flow.AFTER):
                mine = [e for e in execs.values() if e.run == run_id and e.node == node_id]
                if len(mine) != 1 or mine[0].end is None or completions[node_id] != 1:
                    problems.append(
                        f"{where} node {node_id}: {len(mine)} execution(s), {completions[node_id]} "
                        "'completed in' log line(s); expected exactly one"
                    )
            delay_done = info.nodes[chaos_flow.DELAY].finished_at
            for e in execs.values():
                if e.run != run_id or e.node != chaos_flow.AFTER:
                    continue
                late[delay] = round(e.start - deadlines[run_id], 3)
                if e.start < deadlines[run_id]:
                    problems.append(
                        f"{where}: {chaos_flow.AFTER} started {deadlines[run_id] - e.start:.3f}s before the deadline"
                    )
                if delay_done is None or e.start + EPS < delay_done.timestamp():
                    problems.append(f"{where}: {chaos_flow.AFTER} started before the delay completed ({delay_done})")
        print(
            f"\n[chaos-delay {backend}] worker killed {deadlines[short_run] - killed_at:.2f}s before the short "
            f"delay's deadline; new worker started {restarted_at - deadlines[short_run]:.2f}s after it and "
            f"{deadlines[long_run] - restarted_at:.2f}s before the long one's; 'after' started that long after "
            f"each deadline (by delay): {late}; wall time {wall:.1f}s"
        )
        if problems:
            pytest.fail("\n  ".join(["a delay across a worker restart:", *problems]) + f"\nlogs:\n{fleet.logs()}")
        assert restarted_at < deadlines[long_run], "the new worker started after the long delay was over"
