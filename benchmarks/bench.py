"""autoflow vs raw Huey: throughput, latency and graph-size scaling, on Redis and SQLite.

    python benchmarks/bench.py [--backend redis|sqlite|both] [--quick] [--redis URL]
                               [--rounds N] [--latency-runs N] [--no-scaling] [--json FILE]
                               [--profile DIR] [--sqlite-dir DIR] [--worker-module MODULE]

Method and figures: docs/performance.md.

For each backend, in one invocation and on the same store:

1. **Raw Huey**: a consumer process (``python -m benchmarks.rawhuey``: 2 thread workers,
   the polling parameters of autoflow's consumer) runs 200 concurrent 10-step chains of a
   no-op task that enqueues its own next step (2,000 steps).
2. **autoflow**: a worker process (``python -m autoflow.cli worker benchmarks.flows
   --workers 2 --kind thread``, ``WORKFLOW_CONCURRENCY=200``) runs 200 concurrent
   10-node chain workflows (2,000 nodes), submitted by ``af.Client(..., workers=0)``.

Throughput rounds (5) alternate raw/autoflow (both consumers stay up; idle they cost
almost nothing) and the median round is reported. steps/s = steps / (last finish - first
submit), with the finish times recorded by the workers. Then each side runs single
10-step chains one after the other (latency: p50/p95 of created -> finished as recorded
by the engine, and of the time the submitting client observes). Last, autoflow alone runs
a 1,000-node chain and a 1,000-node fan-out against 10-node graphs (per-node cost).

Redis: a private ``redis-server`` on a free loopback port (``--save "" --appendonly no``)
unless ``--redis URL`` (loopback only) is given; keys are namespaced per invocation and
deleted afterwards. SQLite: files in a temporary directory. Every process started here is
stopped on exit (and gets SIGKILL if this script dies: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/bench.py` from anywhere

from benchmarks import flows  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    CHAIN_LEN,
    WORKERS,
    Child,
    RedisServer,
    Setup,
    check_loopback,
    git_revision,
    loadavg,
    open_setup,
    proc_memory,
    profiled,
    wait_until,
)
from benchmarks.measure import (  # noqa: E402
    af_big,
    af_latency,
    af_many,
    af_map,
    af_throughput,
    raw_latency,
    raw_throughput,
    wait_run,
)


# -- driver ---------------------------------------------------------------------------------------
@dataclass
class Options:
    rounds: int
    latency_runs: int
    scaling: bool
    big_runs: int
    profile: Path | None = None


def run_backend(s: Setup, opt: Options, log: Callable[[str], None]) -> dict[str, Any]:
    # Warm up both sides (imports, connections, definition cache) and prove they are up.
    load_before = loadavg()
    log(f"[{s.kind}] warming up (workers starting); load average {load_before}")
    tag = uuid.uuid4().hex[:6]
    for c in range(5):
        s.starter(tag, c, 0, CHAIN_LEN)
    wait_until(lambda: s.huey.result_count() >= 5, 60, "the raw Huey consumer to start", s.procs, 0.02)
    for c in range(5):
        s.huey.get(f"done:{tag}:{c}")
    log(f"[{s.kind}] raw Huey consumer up")
    for i in range(5):
        wait_run(s, s.client.execute(flows.CHAIN_10, x=i).id, 60)
    log(f"[{s.kind}] autoflow worker up")
    for _ in range(3):
        af_latency(s, 1)
        raw_latency(s, 1)

    raw_rounds, af_rounds = [], []
    for r in range(opt.rounds):
        for side in ("raw", "autoflow") if r % 2 == 0 else ("autoflow", "raw"):  # alternate who goes first
            if side == "raw":
                raw_rounds.append(raw_throughput(s))
                log(f"[{s.kind}] round {r + 1}: raw Huey {raw_rounds[-1]['steps_per_s']:7.0f} steps/s")
            else:
                af_rounds.append(af_throughput(s))
                log(f"[{s.kind}] round {r + 1}: autoflow {af_rounds[-1]['steps_per_s']:7.0f} steps/s")
    if opt.profile:  # an extra, unreported round of each under py-spy (sampling slows them)
        log(f"[{s.kind}] profiling one more round of each with py-spy into {opt.profile}")
        with profiled(s.raw_proc, opt.profile):
            raw_throughput(s)
        with profiled(s.af_proc, opt.profile):
            af_throughput(s)
    raw_med = sorted(raw_rounds, key=lambda x: x["steps_per_s"])[len(raw_rounds) // 2]
    af_med = sorted(af_rounds, key=lambda x: x["steps_per_s"])[len(af_rounds) // 2]

    log(f"[{s.kind}] latency: {opt.latency_runs} sequential single 10-step chains each")
    raw_lat = raw_latency(s, opt.latency_runs)
    af_lat = af_latency(s, opt.latency_runs)

    scaling: list[dict[str, Any]] = []
    if opt.scaling:
        log(f"[{s.kind}] graph size: 10 vs 1,000 nodes")
        scaling.append(
            {
                "graph": "chain 10 (sequential, alone)",
                "nodes": 10,
                "exec_s": af_lat["execution_p50_ms"] / 1000,
                "nodes_per_s": 1000 / af_lat["per_node_ms"],
                "ms_per_node": af_lat["per_node_ms"],
                "worker_cpu_ms_per_node": af_lat["worker_cpu_ms_per_node"],
                "redis_cpu_ms_per_node": af_lat["redis_cpu_ms_per_node"],
            }
        )
        chain_runs = [af_big(s, flows.CHAIN_1000, "chain 1,000 (sequential, alone)") for _ in range(opt.big_runs)]
        scaling.append(sorted(chain_runs, key=lambda x: x["ms_per_node"])[len(chain_runs) // 2])
        scaling.append(af_many(s, flows.FANOUT_10, 100, "100 x fan-out 10 (concurrent)"))
        fan_runs = [af_big(s, flows.FANOUT_1000, "fan-out 1,000 (1 run)") for _ in range(opt.big_runs)]
        scaling.append(sorted(fan_runs, key=lambda x: x["ms_per_node"])[len(fan_runs) // 2])
        log(f"[{s.kind}] map: 100 vs 10,000 items")
        scaling.append(af_map(s, 100))
        scaling.append(af_map(s, 10_000))

    warnings = [
        line
        for child in s.procs
        for line in child.tail(100_000).splitlines()
        if "WARNING" in line or "ERROR" in line or "Traceback" in line
    ]
    pair_ratios = [a["steps_per_s"] / r["steps_per_s"] for r, a in zip(raw_rounds, af_rounds, strict=True)]
    return {
        "backend": s.kind,
        "namespace": s.namespace,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "pair_ratios": pair_ratios,
        "pair_ratio_median": statistics.median(pair_ratios),
        "worker_log_warnings": len(warnings),
        "worker_log_sample": warnings[:5],
        "raw": {
            "throughput": raw_med,
            "rounds": [x["steps_per_s"] for x in raw_rounds],
            "latency": raw_lat,
            "memory_mib": proc_memory(s.raw_proc.pid),
        },
        "autoflow": {
            "throughput": af_med,
            "rounds": [x["steps_per_s"] for x in af_rounds],
            "latency": af_lat,
            "memory_mib": proc_memory(s.af_proc.pid),
        },
        "ratio": af_med["steps_per_s"] / raw_med["steps_per_s"],
        "scaling": scaling,
    }


def report(res: dict[str, Any]) -> str:
    raw, afl = res["raw"], res["autoflow"]
    rt, at = raw["throughput"], afl["throughput"]
    rl, al = raw["latency"], afl["latency"]
    lines = [
        f"== {res['backend']}: 200 concurrent 10-step chains (2,000 steps), 1 process x {WORKERS} threads ==",
        f"{'':10}{'steps/s':>9}{'wall s':>8}{'submit s':>9}   CPU s: {'worker':>6}{'redis':>6}{'client':>7}"
        "   rounds (steps/s)",
        f"{'raw Huey':10}{rt['steps_per_s']:9.0f}{rt['wall_s']:8.2f}{rt['submit_s']:9.2f}          "
        f"{rt['worker_cpu_s']:6.2f}{rt['redis_cpu_s']:6.2f}{rt['client_cpu_s']:7.2f}   "
        + ", ".join(f"{x:.0f}" for x in raw["rounds"]),
        f"{'autoflow':10}{at['steps_per_s']:9.0f}{at['wall_s']:8.2f}{at['submit_s']:9.2f}          "
        f"{at['worker_cpu_s']:6.2f}{at['redis_cpu_s']:6.2f}{at['client_cpu_s']:7.2f}   "
        + ", ".join(f"{x:.0f}" for x in afl["rounds"]),
        f"ratio autoflow / raw Huey: {res['ratio']:.1%} of the medians; per round "
        + ", ".join(f"{x:.0%}" for x in res["pair_ratios"])
        + f" (median {res['pair_ratio_median']:.1%})   target >= 50% on Redis",
        "",
        f"single 10-step chain, {al['runs']} sequential runs (engine: created->finished; obs: submit->wait returns):",
        f"{'':22}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'obs p50':>9}{'obs p95':>9}",
        f"{'raw Huey':22}{rl['p50_ms']:9.1f}{rl['p95_ms']:9.1f}{rl['max_ms']:9.1f}"
        f"{rl['observed_p50_ms']:9.1f}{rl['observed_p95_ms']:9.1f}",
        f"{'autoflow':22}{al['p50_ms']:9.1f}{al['p95_ms']:9.1f}{al['max_ms']:9.1f}"
        f"{al['observed_p50_ms']:9.1f}{al['observed_p95_ms']:9.1f}",
        f"autoflow p50 split: admission {al['admission_p50_ms']:.1f} ms"
        f" + execution {al['execution_p50_ms']:.1f} ms ({al['per_node_ms']:.2f} ms/node)"
        "   (target p50 < 20 ms)",
        "",
        "worker memory (MiB): raw Huey RSS {:.0f} (peak {:.0f}); autoflow RSS {:.0f} (peak {:.0f})".format(
            raw["memory_mib"].get("VmRSS", float("nan")),
            raw["memory_mib"].get("VmHWM", float("nan")),
            afl["memory_mib"].get("VmRSS", float("nan")),
            afl["memory_mib"].get("VmHWM", float("nan")),
        ),
        f"warnings/errors in the workers' logs: {res['worker_log_warnings']}",
        f"load average (1/5/15 min) before {res['loadavg_before']}, after {res['loadavg_after']}"
        " (2 vCPUs: anything well above ~2.5 during the run means other work competed)",
    ]
    if res["scaling"]:
        lines += [
            "",
            "autoflow, graph size (engine clock; CPU = worker / redis-server CPU per node):",
            f"{'graph':34}{'nodes':>6}{'exec s':>7}{'nodes/s':>8}{'ms/node':>8}{'CPU ms/node':>13}"
            f"{'submit ms':>10}{'status ms':>10}",
        ]
        for row in res["scaling"]:
            cpu = f"{row['worker_cpu_ms_per_node']:.2f}/{row['redis_cpu_ms_per_node']:.2f}"
            submit = f"{row['submit_ms']:10.0f}" if "submit_ms" in row else f"{'':10}"
            status = f"{row['status_call_ms']:10.0f}" if "status_call_ms" in row else f"{'':10}"
            lines.append(
                f"{row['graph']:34}{row['nodes']:6}{row['exec_s']:7.2f}{row['nodes_per_s']:8.0f}"
                f"{row['ms_per_node']:8.2f}{cpu:>13}{submit}{status}"
            )
            if row["graph"].startswith("map over 10,000"):
                small = next(r for r in res["scaling"] if r["graph"].startswith("map over 100 "))
                lines.append(
                    f"{'':4}map items/s, 10,000 vs 100 items: {row['nodes_per_s']:.0f} vs {small['nodes_per_s']:.0f}"
                    f" (ratio {row['nodes_per_s'] / small['nodes_per_s']:.2f})"
                )
            if "first100_ms_per_node" in row:
                lines.append(
                    f"{'':4}1,000-chain ms/node: nodes 1-100 {row['first100_ms_per_node']:.2f},"
                    f" nodes 901-1000 {row['last100_ms_per_node']:.2f}"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "sqlite", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="1 round, 20 latency runs, 1 run per big graph")
    parser.add_argument("--redis", metavar="URL", help="a loopback Redis to use instead of a private one")
    parser.add_argument("--rounds", type=int, help="throughput rounds per side (default 5; quick 1)")
    parser.add_argument("--latency-runs", type=int, help="sequential single runs per side (default 50; quick 20)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 10 vs 1,000-node comparison")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--sqlite-dir",
        metavar="DIR",
        type=Path,
        help="where the SQLite files go (default: a temporary directory; e.g. /dev/shm to leave out fsync)",
    )
    parser.add_argument(
        "--worker-module",
        metavar="MODULE",
        action="append",
        default=[],
        help="another module for `autoflow worker` to import (e.g. to try an engine change); repeatable",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="profile an extra throughput round of each worker with py-spy into DIR",
    )
    args = parser.parse_args(argv)
    if args.redis:
        check_loopback(args.redis)
    opt = Options(
        rounds=args.rounds or (1 if args.quick else 5),
        latency_runs=args.latency_runs or (20 if args.quick else 50),
        scaling=not args.no_scaling,
        big_runs=1 if args.quick else 2,
        profile=args.profile,
    )
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    children: list[Child] = []
    scratch: list[Path] = []  # per-backend working directories (SQLite files, logs)
    results: list[dict[str, Any]] = []
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s  {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="autoflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"autoflow {git_revision()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        try:
            redis_url, redis_pid = args.redis, None
            if "redis" in backends and not redis_url:
                server = RedisServer(tmp, children)
                redis_url, redis_pid = server.url, server.child.pid
                log(f"private redis-server at {redis_url}")
            for kind in backends:
                work = Path(tempfile.mkdtemp(prefix=f"autoflow-bench-{kind}-", dir=args.sqlite_dir or tmp))
                scratch.append(work)
                with open_setup(kind, redis_url, work, children, redis_pid, args.worker_module) as setup:
                    results.append(run_backend(setup, opt, log))
                print(report(results[-1]) + "\n", flush=True)
        except BaseException:
            for child in children:
                if child.name != "redis-server" and child.proc.returncode not in (None, 0, -15):
                    print(f"--- {child.name} log ---\n{child.tail()}", file=sys.stderr)
            raise
        finally:
            for child in reversed(children):
                child.stop()
            for work in scratch:
                shutil.rmtree(work, ignore_errors=True)
    meta = {
        "git": git_revision(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "rounds": opt.rounds,
        "latency_runs": opt.latency_runs,
        "total_s": time.monotonic() - started,
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    log(f"done in {meta['total_s']:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
