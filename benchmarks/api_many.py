"""Many runs in one request: ``POST /api/executions/execute-many`` over real HTTP on loopback.

    python benchmarks/api_many.py [--items 1000] [--rounds 7] [--backend redis|sqlite|both]

Starts ``autoflow serve benchmarks.api_flows --workers 0`` (no node workers: what is
measured is the request) on a private ``redis-server`` on a free loopback port, or on a
SQLite file in a temporary folder, and sends, rounds alternating:

* ``plain``: ``--items`` runs of ``bench_api`` in one request, no idempotency keys;
* ``keyed``: the same with one new idempotency key per item;
* ``found``: the keyed request again (every run found by its key: a 200).

Reported per way (median round): runs/s (items / the request's wall time, as the caller
sees it), the request's time and, on Redis, the round trips the server made for it (the
Redis server's ``total_reads_processed``: the same on a quiet machine and a busy one).
``WORKFLOW_CONCURRENCY`` is left at its default, so most runs stay pending, as behind busy
workers. Loopback only; not part of the test suite.
Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/api_many.py` from anywhere

from benchmarks.harness import PYTHON, Child, RedisServer, _child_env, free_port, git_revision, loadavg, wait_ready  # noqa: E402

SECRET = "benchmark-jwt-secret-" + "x" * 48
WAYS = ("plain", "keyed", "found")


def _token() -> str:
    now = int(time.time())
    claims = {"sub": "bench", "org": "bench", "scope": "execute", "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _serve(backend: str, workdir: Path, children: list[Child]) -> tuple[str, redis.Redis | None]:
    env = {
        "AUTOFLOW_JWT_SECRET": SECRET,
        "AUTOFLOW_API_RATE_LIMIT": "1000000/s",
        "AUTOFLOW_API_EXECUTE_RATE_LIMIT": "1000000/s",
        "AUTOFLOW_API_MAX_BULK_ITEMS": "10000",
        "AUTOFLOW_SCHEDULER": "false",
        "AUTOFLOW_HOME": str(workdir / "home"),
        "AUTOFLOW_NAMESPACE": f"many{uuid.uuid4().hex[:8]}",
    }
    counters = None
    if backend == "redis":
        env["AUTOFLOW_REDIS_URL"] = RedisServer(workdir, children).url
        counters = redis.Redis.from_url(env["AUTOFLOW_REDIS_URL"])
    port = free_port()
    argv = [PYTHON, "-m", "autoflow.cli", "serve", "benchmarks.api_flows", "--port", str(port), "--workers", "0"]
    children.append(Child(f"api-{backend}", argv, _child_env(env), workdir))
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, children)
    return base, counters


def _request(http: httpx.Client, body: dict[str, Any], expect: int, counters: redis.Redis | None) -> tuple[float, int]:
    """The request's wall time, and the round trips Redis served meanwhile (0 on SQLite)."""
    before = counters.info("stats")["total_reads_processed"] if counters else 0
    started = time.perf_counter()
    reply = http.post("/api/executions/execute-many", json=body)
    took = time.perf_counter() - started
    if reply.status_code != expect:
        raise RuntimeError(f"expected {expect}, got {reply.status_code}: {reply.text[:300]}")
    trips = counters.info("stats")["total_reads_processed"] - before - 1 if counters else 0  # not our INFO
    return took, trips


def _measure(
    base: str, counters: redis.Redis | None, items: int, rounds: int, label: str
) -> dict[str, dict[str, float]]:
    headers = {"Authorization": f"Bearer {_token()}"}
    took: dict[str, list[float]] = {way: [] for way in WAYS}
    trips: dict[str, list[int]] = {way: [] for way in WAYS}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        _request(http, {"workflowId": "bench_api", "inputs": [{"body": 0}] * 10}, 202, None)  # warm up
        for r in range(rounds):
            inputs = [{"body": i} for i in range(items)]
            keyed = {"workflowId": "bench_api", "inputs": inputs}
            keyed["idempotencyKeys"] = [f"r{r}-{uuid.uuid4().hex[:8]}-{i}" for i in range(items)]
            plain = {"workflowId": "bench_api", "inputs": inputs}
            order = [("plain", plain, 202), ("keyed", keyed, 202)]
            for way, body, expect in [*(order if r % 2 == 0 else order[::-1]), ("found", keyed, 200)]:
                wall, count = _request(http, body, expect, counters)
                took[way].append(wall)
                trips[way].append(count)
            line = "  ".join(f"{way} {items / took[way][-1]:6.0f} runs/s" for way in WAYS)
            print(f"{label} round {r + 1}: {line}", flush=True)
    return {
        way: {
            "runs_per_s": items / statistics.median(times),
            "request_ms": statistics.median(times) * 1000,
            "trips": statistics.median(trips[way]),
        }
        for way, times in took.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    args = parser.parse_args()
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for backend in backends:
        children: list[Child] = []
        try:
            with tempfile.TemporaryDirectory(prefix="af-api-many-") as tmp:
                base, counters = _serve(backend, Path(tmp), children)
                table[backend] = _measure(base, counters, args.items, args.rounds, backend)
        finally:
            for child in reversed(children):
                child.stop()
    print(f"\n== execute-many of {args.items} items over HTTP, no workers (median of {args.rounds} rounds) ==")
    for backend, ways in table.items():
        for way, out in ways.items():
            trips = f"  {out['trips']:6.0f} Redis round trips" if backend == "redis" else ""
            print(
                f"{backend:7s} {way:6s} {out['runs_per_s']:8.0f} runs/s  {out['request_ms']:8.1f} ms per request{trips}"
            )
    print(f"revision {git_revision()}, load average {loadavg()}")


if __name__ == "__main__":
    main()
