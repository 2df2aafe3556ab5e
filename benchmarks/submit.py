"""Submitting runs: ``execute()`` one run at a time against ``execute_many()``.

    python benchmarks/submit.py [--runs N] [--rounds N] [--backend redis|sqlite|both] [--redis URL]

A client with no workers (``workers=0``) submits ``--runs`` runs of the 10-node chain of
``benchmarks/flows.py`` each way, rounds alternating; ``WORKFLOW_CONCURRENCY`` is the
number of runs, so every run is admitted and its root's message queued, as a client
feeding idle workers does. Reported per way (median round): runs/s, client CPU per run
and, on Redis, the server's CPU, commands and round trips (client reads) per run from the server's own
counters. Redis: a private ``redis-server`` on a free loopback port unless ``--redis``
(loopback only; keys are namespaced per round and deleted). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

import autoflow as af  # noqa: E402
from benchmarks import flows  # noqa: E402
from benchmarks.harness import Child, RedisServer, check_loopback, git_revision, loadavg, proc_cpu  # noqa: E402

WAYS = ("execute", "execute_many")


def _submit(client: af.Client, way: str, runs: int) -> None:
    if way == "execute":
        for i in range(runs):
            client.execute(flows.CHAIN_10, x=i)
    else:
        client.execute_many(flows.CHAIN_10, [{"x": i} for i in range(runs)])


def _round(
    make: Callable[[str], af.Client], way: str, runs: int, counters: redis.Redis | None, redis_pid: int | None
) -> dict[str, Any]:
    ns = f"sub{uuid.uuid4().hex[:10]}"
    client = make(ns)
    try:
        client.execute(flows.CHAIN_10, x=-1)  # definitions stored, connections made, secret checked
        before = counters.info("stats") if counters is not None else None
        r0 = proc_cpu(redis_pid) if redis_pid else 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        _submit(client, way, runs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out: dict[str, Any] = {"runs_per_s": runs / wall, "client_cpu_us": cpu * 1e6 / runs}
        if redis_pid:
            out["redis_cpu_us"] = (proc_cpu(redis_pid) - r0) * 1e6 / runs
        if counters is not None and before is not None:
            after = counters.info("stats")
            out["commands"] = (after["total_commands_processed"] - before["total_commands_processed"] - 1) / runs
            out["trips"] = (after["total_reads_processed"] - before["total_reads_processed"] - 1) / runs
        waiting = client.backend.dispatcher.backlog()
        if waiting != runs + 1:
            raise RuntimeError(f"{way}: {waiting} root messages queued for {runs + 1} runs")
        return out
    finally:
        if counters is not None:
            for key in counters.scan_iter(match=f"*{ns}*", count=1000):
                counters.delete(key)
        client.close()


def _measure(
    backend: str, url: str | None, redis_pid: int | None, runs: int, rounds: int, workdir: Path
) -> dict[str, dict[str, float]]:
    counters = redis.Redis.from_url(url) if url else None

    def make(ns: str) -> af.Client:
        settings = af.Settings(home=workdir / ns, namespace=ns, workflow_concurrency=runs + 1, scheduler=False)
        return af.Client(url, settings=settings, workers=0)

    results: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for r in range(rounds):
        for way in WAYS if r % 2 == 0 else WAYS[::-1]:
            out = _round(make, way, runs, counters, redis_pid)
            results[way].append(out)
            extra = f"  {out['trips']:.2f} trips/run" if "trips" in out else ""
            print(f"{backend} round {r + 1}: {way:13s} {out['runs_per_s']:8.0f} runs/s{extra}", flush=True)
    return {way: {key: statistics.median(o[key] for o in outs) for key in outs[0]} for way, outs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--redis", metavar="URL", help="a loopback Redis instead of a private one")
    args = parser.parse_args()
    if args.redis:
        check_loopback(args.redis)
    children: list[Child] = []
    try:
        with tempfile.TemporaryDirectory(prefix="af-submit-") as tmp:
            workdir = Path(tmp)
            table: dict[str, dict[str, dict[str, float]]] = {}
            if args.backend in ("redis", "both"):
                server = None if args.redis else RedisServer(workdir, children)
                url = args.redis or server.url  # type: ignore[union-attr]
                pid = server.child.pid if server else None
                table["Redis"] = _measure("redis", url, pid, args.runs, args.rounds, workdir)
            if args.backend in ("sqlite", "both"):
                table["SQLite"] = _measure("sqlite", None, None, args.runs, args.rounds, workdir)
    finally:
        for child in children:
            child.stop()
    print(f"\n== submitting {args.runs} runs of a 10-node chain, no workers (median of {args.rounds} rounds) ==")
    print(
        f"{'':22s} {'runs/s':>8s} {'vs one by one':>13s} {'client CPU/run':>14s} {'Redis CPU/run':>13s} "
        f"{'cmd/run':>8s} {'trips/run':>9s}"
    )
    for backend, ways in table.items():
        base = ways["execute"]["runs_per_s"]
        for way, out in ways.items():
            cmd = f"{out['commands']:8.1f}" if "commands" in out else f"{'-':>8s}"
            trips = f"{out['trips']:9.2f}" if "trips" in out else f"{'-':>9s}"
            rcpu = f"{out['redis_cpu_us']:10.0f} us" if "redis_cpu_us" in out else f"{'-':>13s}"
            label = f"{backend}, {way}"
            print(
                f"{label:22s} {out['runs_per_s']:8.0f} {out['runs_per_s'] / base:12.2f}x "
                f"{out['client_cpu_us']:11.0f} us {rcpu} {cmd} {trips}"
            )
    print(f"revision {git_revision()}, load average {loadavg()} (2 vCPUs here)")


if __name__ == "__main__":
    main()
