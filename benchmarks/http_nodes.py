"""http_request nodes per second against a local HTTP server, next to plain httpx in a loop.

    python benchmarks/http_nodes.py [--requests N] [--redis URL|auto] [--workers N]

One invocation, one local server (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive, a
small JSON answer) on 127.0.0.1, measured in this order:

1. **baseline**: ``httpx.Client().get(url)`` in a loop (one pooled connection);
2. **node call**: ``http_request(url)`` called as a plain function: the node's own cost
   (argument validation, the network-policy check, response decoding) on the same pool;
3. **engine, immediate**: N one-node JSON workflows run one after the other in memory
   (``af.Client(immediate=True)``): the whole path of a run per request;
4. **engine, embedded SQLite**: one ``.map`` of N ``http_request`` items on the default
   embedded backend with ``--workers`` worker threads;
5. **engine, Redis** (``--redis auto`` starts a private redis-server on a free loopback
   port if one is installed): the same map, with in-process worker threads.

Prints requests/s (nodes/s) for each and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import autoflow as af  # noqa: E402
from autoflow.nodes import http_request  # noqa: E402

BODY = json.dumps({"ok": True, "items": list(range(10))}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


def _server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _rate(label: str, count: int, fn: Callable[[], None], baseline: float | None) -> float:
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    rate = count / elapsed
    ratio = f"  ({rate / baseline:5.1%} of the baseline)" if baseline else ""
    print(f"{label:<44} {count:6d} in {elapsed:6.2f}s  {rate:8.0f}/s  {1000 * elapsed / count:6.2f} ms each{ratio}")
    return rate


def _redis(url: str | None) -> tuple[str | None, subprocess.Popen[bytes] | None]:
    if url != "auto":
        return url, None
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def _map_workflow(urls: list[str]) -> af.Workflow:
    return af.Workflow.from_dict(
        {
            "name": f"bench_http_{uuid.uuid4().hex[:6]}",
            "inputs": {"urls": {"type": "array"}},
            "nodes": [
                {
                    "id": "get",
                    "type": "http_request",
                    "config": {"url": {"$input": "urls"}},
                    "map": {"over": "url", "max_parallel": None},
                },
            ],
            "edges": [],
            "output": "get",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--redis", default="auto", help="a loopback Redis URL, 'auto' (start one) or 'none'")
    args = parser.parse_args()
    n = args.requests
    server = _server()
    url = f"http://127.0.0.1:{server.server_address[1]}/items"
    print(f"http_request against {url} (python {sys.version.split()[0]}, httpx {httpx.__version__})")

    with httpx.Client() as client:
        client.get(url)
        baseline = _rate(
            "1. baseline: httpx.Client.get in a loop", n, lambda: [client.get(url).json() for _ in range(n)], None
        )
    http_request(url)
    _rate("2. http_request(url) as a function", n, lambda: [http_request(url) for _ in range(n)], baseline)

    single = af.Workflow.from_dict(
        {
            "name": "bench_one",
            "nodes": [{"id": "get", "type": "http_request", "config": {"url": url}}],
            "edges": [],
            "output": "get",
        }
    )
    runs = max(1, n // 4)
    with af.Client(immediate=True) as immediate:
        immediate.execute(single).result()
        _rate(
            "3. engine, immediate: one run per request",
            runs,
            lambda: [immediate.execute(single).result() for _ in range(runs)],
            baseline,
        )

    urls = [url] * n
    wf = _map_workflow(urls)
    with tempfile.TemporaryDirectory() as home:
        settings = af.Settings(home=Path(home), node_concurrency=args.workers)
        with af.Client(settings=settings, workers=args.workers) as embedded:
            embedded.execute(wf, urls=urls[:10]).result(timeout=60)
            _rate(
                f"4. engine, SQLite: .map, {args.workers} threads",
                n,
                lambda: embedded.execute(wf, urls=urls).result(timeout=600),
                baseline,
            )

    redis_url, proc = _redis(None if args.redis == "none" else args.redis)
    if redis_url is None:
        print("5. engine, Redis: skipped (no redis-server; give --redis URL)")
    else:
        try:
            settings = af.Settings(namespace=f"bench{uuid.uuid4().hex[:8]}", node_concurrency=args.workers)
            with af.Client(redis_url, settings=settings, workers=args.workers) as remote:
                remote.execute(wf, urls=urls[:10]).result(timeout=60)
                _rate(
                    f"5. engine, Redis: .map, {args.workers} threads",
                    n,
                    lambda: remote.execute(wf, urls=urls).result(timeout=600),
                    baseline,
                )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    server.shutdown()


if __name__ == "__main__":
    main()
