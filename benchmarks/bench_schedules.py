"""Schedule firing lateness and database-trigger latency, on Redis and SQLite.

    python benchmarks/bench_schedules.py [--backend redis|sqlite|both] [--schedules 10,100,500]
                                         [--slots 3] [--events 200] [--pg URL] [--no-pg] [--json FILE]

Method and figures: docs/performance.md ("Schedules and database triggers").

1. **Ticker lateness.** N schedules share one cron, ``* * * * * */2`` (every 2 s; seconds are the 6th field), so N
   slots fall due in the same second. A real :class:`~autoflow.triggers.Ticker` thread
   (wall clock, lease, sleeping until the next wake-up) fires them for ``--slots`` slots.
   Lateness of a run = its ``created_at`` in the store - its slot's fire time; p50, p99
   and max per N. Runs are only created (a client without workers), so the figure is the
   scheduler's own cost. **Baseline in the same run**: N runs started back to back with
   ``client.execute(..., idempotency_key=...)`` and no ticker; the lateness of the i-th
   run of a batch cannot be below the time those i starts take.
2. **Database trigger latency** (PostgreSQL, when reachable): one row per transaction
   every 20 ms into a watched table; latency = run ``created_at`` - the outbox row's
   ``clock_timestamp()`` (the insert). With the NOTIFY wake-up (poll every 5 s) against a
   **baseline** of polling alone every 0.5 s (no LISTEN). Then the SQLite outbox polled
   every 0.1 s.

Redis: a private redis-server on a free loopback port. PostgreSQL: a database created here
on the server of ``--pg`` (loopback only) and dropped at the end. Nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import autoflow as af  # noqa: E402
from autoflow.models import DbTriggerInfo  # noqa: E402
from autoflow.triggers.postgres import PostgresSource  # noqa: E402
from benchmarks.harness import Child, RedisServer, git_revision, loadavg, pct  # noqa: E402
from benchmarks.sched_flows import scheduled  # noqa: E402


def lateness_stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": max(ms) if ms else 0.0}


def bench_ticker(url: str, n: int, slots: int, settings: af.Settings) -> dict[str, Any]:
    with af.Client(url, settings=settings, workers=0, scheduler=False) as client:
        # baseline: n starts back to back, no ticker (the floor of a batch's lateness)
        t0 = time.time()
        ids = [client.execute(scheduled, idempotency_key=f"base:{uuid.uuid4().hex}:{i}").id for i in range(n)]
        base = [client.status(i).created_at.timestamp() - t0 for i in ids]
        for i in range(n):
            client.schedules.create(scheduled, cron="* * * * * */2", overlap="allow_all", id=f"s{n}_{i}")
        ticker = client.schedules.ticker(lease=10.0, interval=1.0)
        ticker.start()
        time.sleep(2 * slots + 1.5)  # nothing else runs meanwhile: the ticker has the process
        ticker.stop()
        runs = client.runs(workflow="bench_sched", limit=100_000)
        fired = [r for r in runs if r.trigger == "schedule"]
        late = [r.created_at.timestamp() - datetime.fromisoformat(r.trigger_data["fire_at"]).timestamp() for r in fired]
    return {"schedules": n, "ticker": lateness_stats(late), "baseline_batch": lateness_stats(base)}


def _pg_admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=3)


def bench_pg(url: str, pg: str, events: int, settings: af.Settings) -> dict[str, Any]:
    import psycopg

    name = f"autoflow_bench_{uuid.uuid4().hex[:8]}"
    with _pg_admin(pg) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = pg.rsplit("/", 1)[0] + f"/{name}"
    out: dict[str, Any] = {}
    try:
        with psycopg.connect(db_url, autocommit=True) as db:
            db.execute("CREATE TABLE orders (id serial PRIMARY KEY, qty int)")
            for label, poll, listen in (("notify", 5.0, True), ("poll_only_0.5s", 0.5, False)):
                with af.Client(url, settings=settings, workers=0, scheduler=False) as client:
                    info = client.db_triggers.activate(
                        scheduled, kind="postgres", table="orders", url=db_url, poll_interval=poll, id=f"b_{label}"[:40]
                    )

                    def opener(i: DbTriggerInfo, _listen: bool = listen) -> PostgresSource:
                        return PostgresSource(i, db_url, listen=_listen)

                    out[label] = _measure(
                        client,
                        info.id,
                        opener,
                        events,
                        lambda q: db.execute("INSERT INTO orders (qty) VALUES (%s)", (q,)),
                    )
                    client.db_triggers.deactivate(info.id)
    finally:
        with _pg_admin(pg) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def bench_sqlite_source(url: str, events: int, settings: af.Settings, workdir: Path) -> dict[str, Any]:
    path = workdir / f"shop-{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, qty INTEGER)")
    with af.Client(url, settings=settings, workers=0, scheduler=False) as client:
        info = client.db_triggers.activate(
            scheduled, kind="sqlite", table="orders", url=f"sqlite:///{path}", poll_interval=0.1, id="b_sqlite"
        )
        result = _measure(
            client,
            info.id,
            client.db_triggers.open_source,
            events,
            lambda q: conn.execute("INSERT INTO orders (qty) VALUES (?)", (q,)),
        )
        client.db_triggers.deactivate(info.id)
    conn.close()
    return {"poll_0.1s": result}


def _measure(client: af.Client, trigger_id: str, opener: Any, events: int, insert: Any) -> dict[str, float]:
    listeners = af.triggers.Listeners(client.backend.store, client.db_triggers.records, client, opener, interval=0.1)
    listeners.start()
    try:
        deadline = time.time() + 10
        while trigger_id not in listeners.running and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # connected and listening
        for q in range(events):
            insert(q)
            time.sleep(0.02)
        deadline = time.time() + 30
        while time.time() < deadline:
            runs = [
                r
                for r in client.runs(workflow="bench_sched", limit=100_000)
                if r.trigger == "database" and r.trigger_data["trigger_id"] == trigger_id
            ]
            if len(runs) >= events:
                break
            time.sleep(0.1)
    finally:
        listeners.stop()
    late = [r.created_at.timestamp() - datetime.fromisoformat(r.trigger_data["at"]).timestamp() for r in runs]
    return lateness_stats(late)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--schedules", default="10,100,500")
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if urlparse(args.pg).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--pg must be a loopback PostgreSQL URL")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    children: list[Child] = []
    report: dict[str, Any] = {"revision": git_revision(), "loadavg_before": loadavg(), "results": {}}
    try:
        backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
        for backend in backends:
            redis_url = RedisServer(workdir, children).url if backend == "redis" else ""
            results: dict[str, Any] = {"ticker": []}
            for n in (int(x) for x in args.schedules.split(",")):
                url = redis_url or f"sqlite:///{workdir / f'autoflow-{n}.db'}"  # each N on its own
                settings = af.Settings(home=workdir, namespace=f"b{uuid.uuid4().hex[:8]}", scheduler=False)
                row = bench_ticker(url, n, args.slots, settings)
                results["ticker"].append(row)
                t, b = row["ticker"], row["baseline_batch"]
                print(
                    f"{backend:6} ticker  N={n:4}: lateness p50 {t['p50_ms']:7.1f} ms  p99 {t['p99_ms']:7.1f} ms"
                    f"  max {t['max_ms']:7.1f} ms  ({t['n']} runs)   baseline batch of N starts:"
                    f" p50 {b['p50_ms']:7.1f} ms  p99 {b['p99_ms']:7.1f} ms",
                    flush=True,
                )
            settings = af.Settings(home=workdir, namespace=f"b{uuid.uuid4().hex[:8]}", scheduler=False)
            if not args.no_pg:
                try:
                    results["postgres"] = bench_pg(url, args.pg, args.events, settings)
                except Exception as exc:  # no server here: say so and go on
                    print(f"{backend:6} postgres: skipped ({type(exc).__name__}: {exc})")
                for label, stats in results.get("postgres", {}).items():
                    print(
                        f"{backend:6} pg {label:15}: insert -> run p50 {stats['p50_ms']:7.1f} ms"
                        f"  p99 {stats['p99_ms']:7.1f} ms  ({stats['n']} events)",
                        flush=True,
                    )
            results["sqlite_source"] = bench_sqlite_source(url, args.events, settings, workdir)
            for label, stats in results["sqlite_source"].items():
                print(
                    f"{backend:6} sqlite outbox {label:8}: insert -> run p50 {stats['p50_ms']:7.1f} ms"
                    f"  p99 {stats['p99_ms']:7.1f} ms  ({stats['n']} events)",
                    flush=True,
                )
            report["results"][backend] = results
    finally:
        for child in children:
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["loadavg_after"] = loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
