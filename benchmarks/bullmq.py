"""autoflow vs BullMQ (the seed's engine) vs raw Huey, on one Redis, in one invocation.

    python benchmarks/bullmq.py [--rounds N] [--repeat N] [--latency-runs N] [--kinds thread,process]
                                [--redis URL] [--json FILE]

Needs Node.js and npm (``npm install bullmq`` runs in a temporary folder); without them
it says so and exits 0. Not part of the test suite.

The workload is the issue's: 200 concurrent 10-step chains (2,000 steps) with 2-way
concurrency on each side:

* **BullMQ** 5: one ``Worker`` with ``concurrency: 2``; each job's processor adds the
  chain's next step (the "processor adds the next step" pattern); completed jobs are kept
  (BullMQ's default);
* **raw Huey**: a ``PriorityRedisHuey`` consumer with 2 workers, a task that enqueues its
  own next step (``benchmarks/rawhuey.py``);
* **autoflow**: ``autoflow worker --workers 2`` running 200 10-node chain workflows
  (``benchmarks/flows.py``) with leases, fencing, logs and the reaper on.

The Python sides run with each ``--kinds`` of worker: ``thread`` (2 threads in one process,
one GIL, like the one Node.js process of BullMQ) and ``process`` (2 forked processes: the
way to use more than one core from Python). Their worker CPU and memory (PSS) count the
process and its children.

Rounds interleave every side (the order rotates each round); the median round is reported.
For every round the Redis server's own counters give, per step: commands executed
(``total_commands_processed``) and client requests read (``total_reads_processed`` —
round trips: a pipeline or a script is one), and the CPU time of the side's process and of
redis-server. Then each side runs single 10-step chains one after the other: p50/p95 of the
time from submitting to the side's own notice of the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks import flows  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    CHAIN_LEN,
    CHAINS,
    WORKERS,
    Child,
    RedisServer,
    Setup,
    check_loopback,
    git_revision,
    loadavg,
    open_setup,
    pct,
    proc_cpu,
    proc_memory,
    wait_until,
)
from benchmarks.measure import af_latency, af_throughput, raw_latency, raw_throughput, wait_run  # noqa: E402

SCRIPT = Path(__file__).with_name("bullmq_chain.js")
BULLMQ = "bullmq@^5"


class BullMQ:
    """The Node.js side: a long-lived process driven with JSON lines on stdin."""

    def __init__(self, url: str, folder: Path) -> None:
        self.prefix = f"bench_bull_{uuid.uuid4().hex[:6]}"
        self.proc = subprocess.Popen(
            ["node", str(SCRIPT), url, self.prefix, str(WORKERS)],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NODE_PATH": str(folder / "node_modules")},  # the script lives elsewhere
        )
        self.pid = self.proc.pid
        ready = self._read(60)
        if not ready.get("ready"):
            raise RuntimeError(f"BullMQ side did not start: {ready}")

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"BullMQ side exited: {err[-2000:]}")
        return dict(json.loads(line))

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read(600)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ask(cmd="quit")
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


def install_bullmq(folder: Path, log: Callable[[str], None]) -> bool:
    if not (shutil.which("node") and shutil.which("npm")):
        log("Node.js/npm not found: skipping the BullMQ comparison (install nodejs and npm to run it)")
        return False
    log(f"installing {BULLMQ} into {folder} (npm)")
    subprocess.run(["npm", "init", "-y"], cwd=folder, check=True, capture_output=True)
    done = subprocess.run(["npm", "install", "--silent", BULLMQ], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        log(f"npm install failed; skipping the BullMQ comparison:\n{done.stderr[-2000:]}")
        return False
    return True


class Counters:
    """Redis's own counters around one measurement: commands and client reads (round trips)."""

    def __init__(self, url: str, redis_pid: int | None) -> None:
        self.r = redis.Redis.from_url(url)
        self.redis_pid = redis_pid

    def snapshot(self) -> tuple[int, int, float]:
        stats = self.r.info("stats")
        cpu = proc_cpu(self.redis_pid) if self.redis_pid else float("nan")
        return int(stats["total_commands_processed"]), int(stats["total_reads_processed"]), cpu

    @contextlib.contextmanager
    def around(self, steps: int, worker_pid: int, out: dict[str, Any]) -> Iterator[None]:
        cmd0, reads0, rcpu0 = self.snapshot()
        wcpu0 = proc_cpu(worker_pid)
        yield
        cmd1, reads1, rcpu1 = self.snapshot()
        out["commands_per_step"] = (cmd1 - cmd0 - 2) / steps  # minus our own INFO calls
        out["round_trips_per_step"] = (reads1 - reads0 - 2) / steps
        out["worker_cpu_ms_per_step"] = (proc_cpu(worker_pid) - wcpu0) * 1000 / steps
        out["redis_cpu_ms_per_step"] = (rcpu1 - rcpu0) * 1000 / steps


def _repeated(side: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
    """Run one side's batch `times` times back to back: steps/s over all of them."""
    outs = [side() for _ in range(times)]
    steps, wall = sum(o["steps"] for o in outs), sum(o["wall_s"] for o in outs)
    return {"steps": steps, "wall_s": wall, "steps_per_s": steps / wall}


def _side_name(side: str, kind: str) -> str:
    """``autoflow`` / ``raw_huey`` for thread workers, ``autoflow_process`` for processes."""
    return side if kind == "thread" else f"{side}_{kind}"


def measure(
    setups: dict[str, Setup],
    bull: BullMQ,
    counters: Counters,
    rounds: int,
    latency_runs: int,
    log: Callable[[str], None],
    repeat: int = 1,
) -> dict[str, Any]:
    """Interleaved rounds of every side (BullMQ, then raw Huey and autoflow with each kind
    of worker in ``setups``), then sequential single chains for latency."""
    steps = CHAINS * CHAIN_LEN * repeat
    sides: dict[str, Callable[[], dict[str, Any]]] = {
        "bullmq": lambda: bull.ask(cmd="throughput", chains=CHAINS, steps=CHAIN_LEN)
    }
    pids = {"bullmq": bull.pid}
    for kind, s in setups.items():
        sides[_side_name("raw_huey", kind)] = partial(raw_throughput, s)
        sides[_side_name("autoflow", kind)] = partial(af_throughput, s)
        pids[_side_name("raw_huey", kind)] = s.raw_proc.pid
        pids[_side_name("autoflow", kind)] = s.af_proc.pid
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(rounds):
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:
            out: dict[str, Any] = {}
            with counters.around(steps, pids[name], out):
                out.update(_repeated(sides[name], repeat))
            results[name].append(out)
            log(
                f"round {r + 1}: {name:16} {out['steps_per_s']:7.0f} steps/s  {out['commands_per_step']:5.1f} cmd/step"
                f"  {out['round_trips_per_step']:4.2f} round trips/step"
            )
    log(f"latency: {latency_runs} sequential single 10-step chains per side")
    latencies = {"bullmq": bull.ask(cmd="latency", runs=latency_runs, steps=CHAIN_LEN)["latencies_ms"]}
    # BullMQ's own notice is in its worker process (the last step's processor starts): its
    # one figure is both. The Python sides: observed by the submitting client (another
    # process), and as the engine stamped it (created -> finished).
    engine_p50 = {"bullmq": pct(latencies["bullmq"], 50)}
    for kind, s in setups.items():
        for name, measured in (
            (_side_name("raw_huey", kind), raw_latency(s, latency_runs)),
            (_side_name("autoflow", kind), af_latency(s, latency_runs)),
        ):
            latencies[name] = [x * 1000 for x in measured["observed_all"]]
            engine_p50[name] = measured["p50_ms"]
    summary: dict[str, Any] = {"kinds": list(setups)}
    for name, rows in results.items():
        median = sorted(rows, key=lambda x: x["steps_per_s"])[len(rows) // 2]
        memory = proc_memory(pids[name])
        summary[name] = {
            "steps_per_s": median["steps_per_s"],
            "rounds": [x["steps_per_s"] for x in rows],
            "commands_per_step": statistics.median(x["commands_per_step"] for x in rows),
            "round_trips_per_step": statistics.median(x["round_trips_per_step"] for x in rows),
            "worker_cpu_ms_per_step": statistics.median(x["worker_cpu_ms_per_step"] for x in rows),
            "redis_cpu_ms_per_step": statistics.median(x["redis_cpu_ms_per_step"] for x in rows),
            "p50_ms": pct(latencies[name], 50),
            "engine_p50_ms": engine_p50[name],
            "p95_ms": pct(latencies[name], 95),
            "rss_mib": memory.get("VmRSS", float("nan")),
            "pss_mib": memory.get("Pss", float("nan")),
        }
    for kind in setups:
        af = results[_side_name("autoflow", kind)]
        summary[f"{_side_name('autoflow', kind)}_vs_bullmq_per_round"] = [
            a["steps_per_s"] / b["steps_per_s"] for a, b in zip(af, results["bullmq"], strict=True)
        ]
    return summary


_PLURAL = {"thread": "threads", "process": "processes"}


def report(res: dict[str, Any]) -> str:
    b = res["bullmq"]
    kinds = res.get("kinds", ["thread"])
    lines = [
        f"== Redis, {CHAINS} concurrent {CHAIN_LEN}-step chains ({CHAINS * CHAIN_LEN} steps), "
        f"{WORKERS}-way concurrency each (Python sides: {WORKERS} thread workers in one process, or "
        f"{WORKERS} process workers) ==",
        f"{'':18}{'steps/s':>8}{'vs BullMQ':>10}{'cmd/step':>9}{'trips/step':>11}{'worker CPU':>11}{'redis CPU':>10}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'engine':>8}{'PSS MiB':>8}   rounds",
    ]
    rows = [("BullMQ (Node.js)", "bullmq")]
    for kind in kinds:
        rows.append((f"raw Huey, {_PLURAL[kind]}", _side_name("raw_huey", kind)))
        rows.append((f"autoflow, {_PLURAL[kind]}", _side_name("autoflow", kind)))
    for label, name in rows:
        row = res[name]
        lines.append(
            f"{label:18}{row['steps_per_s']:8.0f}{row['steps_per_s'] / b['steps_per_s']:10.2f}"
            f"{row['commands_per_step']:9.1f}{row['round_trips_per_step']:11.2f}"
            f"{row['worker_cpu_ms_per_step']:9.2f}ms{row['redis_cpu_ms_per_step']:8.2f}ms"
            f"{row['p50_ms']:8.1f}{row['p95_ms']:8.1f}{row.get('engine_p50_ms', float('nan')):8.1f}"
            f"{row.get('pss_mib', float('nan')):8.0f}   " + ", ".join(f"{x:.0f}" for x in row["rounds"])
        )
    for kind in kinds:
        af, raw = res[_side_name("autoflow", kind)], res[_side_name("raw_huey", kind)]
        per_round = res[f"{_side_name('autoflow', kind)}_vs_bullmq_per_round"]
        lines.append(
            f"autoflow, {_PLURAL[kind]} / BullMQ per round: {', '.join(f'{x:.2f}' for x in per_round)};"
            f" / raw Huey, {_PLURAL[kind]} (medians): {af['steps_per_s'] / raw['steps_per_s']:.2f}"
        )
    lines += [
        "targets: autoflow >= 1.0x BullMQ and >= 1.5x raw Huey; 10-step p50 <= BullMQ's; commands/step <= BullMQ's",
        "worker CPU and PSS: the worker process and its children; CPU per step, PSS at the end",
        "p50/p95: submit -> the submitter's notice; BullMQ's submitter is its worker process (notice: the last"
        " step's processor starts), the Python sides' another process; engine: p50 as the side recorded it"
        " (autoflow: created -> finished; raw Huey: enqueue -> last task's end; BullMQ: its one figure)",
        f"load average before {res['loadavg_before']}, after {res['loadavg_after']} (2 vCPUs)",
    ]
    return "\n".join(lines)


def _warm_up(s: Setup) -> None:
    for i in range(5):
        wait_run(s, s.client.execute(flows.CHAIN_10, x=i).id, 60)
    tag = uuid.uuid4().hex[:6]
    for c in range(3):
        s.starter(tag, c, 0, CHAIN_LEN)
    wait_until(lambda: s.huey.result_count() >= 3, 60, "the raw Huey consumer", s.procs, 0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument(
        "--repeat", type=int, default=3, help="batches of 200 chains per side and round (steadier figures)"
    )
    parser.add_argument("--redis", metavar="URL", help="a loopback Redis instead of a private one")
    parser.add_argument(
        "--kinds",
        default="thread,process",
        help="the Python sides' worker kinds, comma-separated: thread (2 threads, one process), process (2 processes)",
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"thread", "process"}:
        parser.error(f"--kinds takes thread and/or process, got {args.kinds!r}")
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="autoflow-bullmq-") as tmp_name:
        tmp = Path(tmp_name)
        npm_dir = tmp / "bullmq"
        npm_dir.mkdir()
        if not install_bullmq(npm_dir, log):
            return 0
        bull: BullMQ | None = None
        try:
            if args.redis:
                check_loopback(args.redis)
                url, redis_pid = args.redis, None
            else:
                server = RedisServer(tmp, children)
                url, redis_pid = server.url, server.child.pid
            with contextlib.ExitStack() as stack:
                setups = {
                    kind: stack.enter_context(open_setup("redis", url, tmp, children, redis_pid, worker_kind=kind))
                    for kind in kinds
                }
                bull = BullMQ(url, npm_dir)
                log(f"warming up: BullMQ, raw Huey and autoflow with {' and '.join(kinds)} workers")
                for s in setups.values():
                    _warm_up(s)
                bull.ask(cmd="latency", runs=3, steps=CHAIN_LEN)
                before = loadavg()
                res = measure(setups, bull, Counters(url, redis_pid), args.rounds, args.latency_runs, log, args.repeat)
                res.update(loadavg_before=before, loadavg_after=loadavg(), revision=git_revision(), when=time.time())
        finally:
            if bull is not None:
                bull.stop()
            for child in reversed(children):
                child.stop()
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
