"""The REST API and webhooks under load, over real HTTP on loopback.

    python benchmarks/api.py [--seconds 10] [--connections 16] [--webhooks 200]

Starts a private redis-server, ``autoflow serve`` and one ``autoflow worker`` (thread
workers), then measures:

* ``POST /api/executions/execute`` requests/s and latency p50/p99 (each request validates
  a JWT, takes a rate-limit token, stores a run and enqueues it), with ``wrk`` when it is
  installed (``apt-get install wrk``), else a Python asyncio/httpx loader;
* the same load on ``GET /healthz`` (the HTTP stack alone) and ``GET /api/workflows``
  (a token checked, a rate-limit token taken, one store read) as baselines in the same
  run, and ``Client.execute`` called
  in-process (no HTTP) for the cost of the run itself;
* webhook-to-run-started latency: signed deliveries sent one at a time; from just before
  the request to the run's ``started_at`` (set when a worker admits it), and the HTTP
  answer time.

Loopback only; every loop is bounded in count and time. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt

import autoflow as af
from autoflow.triggers.webhooks import sign

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/api.py` from anywhere

from benchmarks import api_flows  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    PYTHON,
    Child,
    RedisServer,
    _child_env,
    free_port,
    git_revision,
    loadavg,
    pct,
    wait_ready,
    wait_until,
)

SECRET = "benchmark-jwt-secret-" + "x" * 48
HOOK_SECRET = "benchmark-webhook-secret-0123456789"


def _token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "bench", "org": "bench", "scope": "admin", "exp": now + 3600}, SECRET, algorithm="HS256")


def _wrk(
    url: str, method: str, body: str | None, token: str, seconds: int, connections: int, tmp: Path
) -> dict[str, Any]:
    script = tmp / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += ["wrk.headers['Content-Type'] = 'application/json'", f"wrk.body = [[{body}]]"]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "tool": "wrk",
        "rps": rps,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def _py_load(
    url: str, method: str, body: str | None, token: str, seconds: int, connections: int
) -> dict[str, Any]:
    latencies: list[float] = []
    bad = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as http:

        async def one_connection() -> None:
            nonlocal bad
            while time.monotonic() < deadline:
                started = time.perf_counter()
                reply = await http.request(method, url, content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                bad += reply.status_code >= 300

        began = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        took = time.monotonic() - began
    return {
        "tool": "python",
        "rps": len(latencies) / took,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "non_2xx": bad,
    }


def load(
    url: str, method: str, body: str | None, token: str, seconds: int, connections: int, tmp: Path
) -> dict[str, Any]:
    if shutil.which("wrk"):
        return _wrk(url, method, body, token, seconds, connections, tmp)
    return asyncio.run(_py_load(url, method, body, token, seconds, connections))


def in_process(redis_url: str, namespace: str, n: int) -> dict[str, float]:
    settings = af.Settings(namespace=namespace)
    with af.Client(redis_url, settings=settings, workers=0) as client:
        started = time.perf_counter()
        for _ in range(n):
            client.execute(api_flows.bench_api, organization_id="bench")
        took = time.perf_counter() - started
    return {"rps": n / took, "mean_ms": took / n * 1000}


def webhooks(base: str, client: af.Client, n: int) -> dict[str, Any]:
    to_start: list[float] = []
    answer: list[float] = []
    body = json.dumps({"order": 1}).encode()
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(n):
            msg_id = f"msg_{i}_{uuid.uuid4().hex[:8]}"
            ts = int(time.time())
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(HOOK_SECRET, msg_id, ts, body),
                "content-type": "application/json",
            }
            sent = time.time()
            t0 = time.perf_counter()
            reply = http.post("/hooks/bench_api/orders", content=body, headers=headers)
            answer.append((time.perf_counter() - t0) * 1000)
            reply.raise_for_status()
            run_id = reply.json()["executionId"]
            deadline = time.monotonic() + 30
            while (started_at := client.status(run_id).started_at) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} did not start within 30 s")
                time.sleep(0.0005)
            to_start.append((started_at.timestamp() - sent) * 1000)
    return {
        "deliveries": n,
        "to_started_p50_ms": pct(to_start, 50),
        "to_started_p99_ms": pct(to_start, 99),
        "answer_p50_ms": pct(answer, 50),
        "answer_p99_ms": pct(answer, 99),
        "mean_ms": statistics.fmean(to_start),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--webhooks", type=int, default=200, help="sequential signed deliveries (default 200)")
    args = parser.parse_args(argv)
    children: list[Child] = []
    tmp = Path(tempfile.mkdtemp(prefix="autoflow-apibench-"))
    try:
        redis = RedisServer(tmp, children)
        namespace = f"bench{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = _child_env(
            {
                "AUTOFLOW_REDIS_URL": redis.url,
                "AUTOFLOW_NAMESPACE": namespace,
                "AUTOFLOW_JWT_SECRET": SECRET,
                "AUTOFLOW_API_RATE_LIMIT": "1000000/s",
                "AUTOFLOW_API_EXECUTE_RATE_LIMIT": "1000000/s",
                "AUTOFLOW_WEBHOOK_SECRET": HOOK_SECRET,
                "WORKFLOW_CONCURRENCY": "200",
            }
        )
        api = Child(
            "api", [PYTHON, "-m", "autoflow.cli", "serve", "benchmarks.api_flows", "--port", str(port)], env, tmp
        )
        worker = Child(
            "worker", [PYTHON, "-m", "autoflow.cli", "worker", "benchmarks.api_flows", "--workers", "8"], env, tmp
        )
        children += [api, worker]
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, children)
        token = _token()
        print(f"# API benchmark, {time.strftime('%Y-%m-%d %H:%M')}, commit {git_revision()}, load {loadavg()}")
        print(
            f"# {os.cpu_count()} CPUs; {args.connections} connections x {args.seconds} s per load; load tool: "
            f"{'wrk' if shutil.which('wrk') else 'python/httpx'}"
        )
        results: dict[str, Any] = {}
        client = af.Client(redis.url, settings=af.Settings(namespace=namespace), workers=0)

        def drained() -> bool:
            stats = client.stats().workflow
            return stats.waiting + stats.active == 0

        results["healthz"] = load(f"{base}/healthz", "GET", None, token, args.seconds, args.connections, tmp)
        results["read"] = load(f"{base}/api/workflows", "GET", None, token, args.seconds, args.connections, tmp)
        results["in_process"] = in_process(redis.url, namespace, 500)
        wait_until(drained, 300, "the backlog to drain", children, interval=0.2)
        body = json.dumps({"workflowId": "bench_api"})
        results["execute"] = load(
            f"{base}/api/executions/execute", "POST", body, token, args.seconds, args.connections, tmp
        )
        wait_until(drained, 300, "the backlog to drain", children, interval=0.2)
        results["webhook"] = webhooks(base, client, args.webhooks)
        client.close()
        for name in ("healthz", "read", "execute"):
            r = results[name]
            print(
                f"{name:10} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms"
                f"   non-2xx {r['non_2xx']}"
            )
        ip = results["in_process"]
        print(f"{'in-process':10} {ip['rps']:8.0f} runs/s  ({ip['mean_ms']:.2f} ms per Client.execute, no HTTP)")
        w = results["webhook"]
        print(
            f"webhook    {w['deliveries']} deliveries: request -> run started p50 {w['to_started_p50_ms']:.1f} ms, "
            f"p99 {w['to_started_p99_ms']:.1f} ms; HTTP answer p50 {w['answer_p50_ms']:.1f} ms, "
            f"p99 {w['answer_p99_ms']:.1f} ms"
        )
        print(json.dumps(results))
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
