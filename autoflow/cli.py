"""``autoflow`` on the command line: a thin layer that parses, builds a Client, calls it.

autoflow worker MODULE [MODULE...] [--workers N] [--kind thread|process] [--redis URL]
autoflow run MODULE:WORKFLOW [--input JSON] [--wait]
autoflow status RUN_ID | logs RUN_ID [--follow] | cancel RUN_ID | stats | runs
autoflow scheduler [MODULE...]          # fire schedules and database triggers (any number of replicas)
autoflow schedules [--json]             # list schedules with their next fire time
autoflow serve [MODULE...] [--host H] [--port P] [--workers N]    (needs autoflow[server])
autoflow token --org ORG [--sub USER] [--scope read|execute|admin] [--ttl SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TextIO

from autoflow.client import Client
from autoflow.config import Settings
from autoflow.define.registry import default_registry
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.engine.backend import open_backend
from autoflow.engine.worker import KINDS, Worker
from autoflow.errors import AutoflowError, NotFoundError, RunTimeout
from autoflow.models import RunInfo, RunStatus
from autoflow.triggers.service import TriggerService

__all__ = ["main"]

EXIT_OK, EXIT_RUN_FAILED, EXIT_ERROR = 0, 1, 2


def _import(name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like python -m: modules next to you are found
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotFoundError(f"cannot import module {name!r}: {exc}") from None


def _workflow(target: str) -> Workflow:
    module_name, sep, attr = target.partition(":")
    if not sep or not attr:
        raise NotFoundError(f"expected MODULE:WORKFLOW, got {target!r}")
    module = _import(module_name)
    found = getattr(module, attr, None)
    if isinstance(found, Workflow):
        return found
    registry: WorkflowRegistry = default_registry()
    return registry.workflow(attr)


def _client(args: argparse.Namespace, *, workers: int | None = 0) -> Client:
    return Client(args.redis, workers=workers)


def _bar(info: RunInfo, width: int = 30) -> str:
    done, total = info.progress
    filled = int(width * done / total) if total else width
    failed = any(n.status.value == "failed" for n in info.nodes.values())
    mark = "x" if failed else "#"
    elapsed = time.time() - info.created_at.timestamp()
    bar = mark * filled + "." * (width - filled)
    return f"[{bar}] {done}/{total} nodes  {info.status.value:9} {elapsed:6.1f}s"


def _watch(client: Client, run_id: str, out: TextIO) -> RunInfo:
    """Show a progress bar until the run ends (one line per change when not a TTY)."""
    tty = out.isatty()
    shown: tuple[Any, ...] | None = None
    while True:
        info = client.status(run_id)
        key = (info.progress, info.status)
        if tty:
            out.write("\r" + _bar(info))
        elif key != shown:
            out.write(_bar(info) + "\n")
        out.flush()
        shown = key
        if info.finished:
            if tty:
                out.write("\n")
            return info
        with contextlib.suppress(RunTimeout):
            client.wait(run_id, timeout=0.2)


def _server() -> Any:
    """``autoflow.server``, or an error naming the extra to install."""
    try:
        return importlib.import_module("autoflow.server")
    except ImportError as exc:
        raise AutoflowError(str(exc)) from None


def _monitoring(settings: Settings, kind: str, stats: Any) -> Any:
    """MONITORING_ENABLED: serve /metrics on MONITORING_PORT; the observer to give workers.
    Process workers share counters through PROMETHEUS_MULTIPROC_DIR (made here if unset,
    before prometheus_client is first imported)."""
    if kind == "process" and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="autoflow-metrics-")
    metrics = _server().metrics
    metrics.serve_metrics(settings.monitoring_port, stats)
    print(f"autoflow worker: metrics on :{settings.monitoring_port}/metrics", flush=True)
    return metrics.MetricsObserver()


def cmd_worker(args: argparse.Namespace) -> int:
    if not args.modules and not args.accept_code:
        raise AutoflowError("name the module(s) that define your nodes: autoflow worker MODULE [MODULE...]")
    for module in args.modules:
        _import(module)
    settings = Settings()
    backend = open_backend(args.redis, settings)
    observer = _monitoring(settings, args.kind, backend.store.stats) if settings.monitoring_enabled else None
    worker = Worker(
        backend,
        default_registry(),
        settings,
        workers=args.workers,
        kind=args.kind,
        shutdown_timeout=args.shutdown_timeout,
        accept_code=args.accept_code,
        observer=observer,
    )
    print(f"autoflow worker: {worker.workers} {args.kind} worker(s) on {backend.url}; Ctrl-C stops", flush=True)
    worker.run()
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    wf = _workflow(args.target)
    try:
        inputs = json.loads(args.input) if args.input else {}
    except json.JSONDecodeError as exc:
        raise AutoflowError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(inputs, dict):
        raise AutoflowError("--input must be a JSON object of workflow inputs")
    client = _client(args, workers=None)
    with client:
        run = client.execute(wf, inputs, priority=args.priority)
        print(f"run {run.id} of {wf.name} submitted to {client.url}", flush=True)
        if not (args.wait or client.runs_locally):
            return EXIT_OK
        info = _watch(client, run.id, sys.stdout)
        for entry in client.logs(run.id):
            print(entry.format())
        if info.status is RunStatus.COMPLETED:
            print(json.dumps(info.output, indent=2, default=str))
            return EXIT_OK
        if info.error:
            print(f"run {info.status.value}: node {info.error.node_id}: {info.error}", file=sys.stderr)
        else:
            print(f"run {info.status.value}", file=sys.stderr)
        return EXIT_RUN_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.status(args.run_id)
        if args.json:
            print(info.model_dump_json(indent=2))
            return EXIT_OK
        print(f"{info.summary()}  created {info.created_at:%Y-%m-%d %H:%M:%S}")
        for node in info.nodes.values():
            took = f"{node.duration * 1000:8.1f} ms" if node.duration is not None else " " * 11
            err = f"  {node.error}" if node.error else ""
            print(f"  {node.id:24} {node.status.value:10} attempt {node.attempt} {took}{err}")
        if info.error:
            print(f"error: {info.error}")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.status(args.run_id)
        since = 0
        while True:
            for entry in client.logs(args.run_id, since=since, node=args.node):
                print(entry.format(), flush=True)
                since = entry.id
            if not args.follow or client.status(args.run_id).finished:
                if args.follow:  # lines written just before the end
                    for entry in client.logs(args.run_id, since=since, node=args.node):
                        print(entry.format(), flush=True)
                return EXIT_OK
            time.sleep(0.5)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(f"run {args.run_id}: {client.cancel(args.run_id).value}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.stats()
    if args.json:
        print(stats.model_dump_json(indent=2))
        return EXIT_OK
    print(f"{'queue':10} {'waiting':>8} {'active':>8} {'completed':>10} {'failed':>8}")
    for name, counts in (("workflow", stats.workflow), ("node", stats.node)):
        print(f"{name:10} {counts.waiting:8} {counts.active:8} {counts.completed:10} {counts.failed:8}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for info in client.runs(workflow=args.workflow, status=args.status, limit=args.limit):
            print(f"{info.id}  {info.workflow:20} {info.status.value:10} {info.created_at:%Y-%m-%d %H:%M:%S}")
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace) -> int:
    for module in args.modules:
        _import(module)
    settings = Settings()
    with Client(args.redis, settings=settings, workers=0, scheduler=False) as client:
        service = TriggerService(
            client.backend.store,
            client,
            client.registry,
            lease=settings.scheduler_lease_seconds,
            sync=not args.no_sync,
            schedules=client.schedules,
            db_triggers=client.db_triggers,
        )
        print(f"autoflow scheduler on {client.url}; Ctrl-C stops", flush=True)
        service.run()
    return EXIT_OK


def cmd_schedules(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.schedules.list(workflow=args.workflow)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return EXIT_OK
    for s in found:
        when = s.cron or f"every {s.interval:g}s"
        state = "paused" if s.paused else (f"next {s.next_fire_at:%Y-%m-%d %H:%M:%S}Z" if s.next_fire_at else "done")
        print(f"{s.id:24} {s.workflow:20} {when:18} {s.timezone:20} {state}  fired {s.fired}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    server = _server()
    for module in args.modules:
        _import(module)
    settings = Settings()
    observer = server.metrics.MetricsObserver()  # for nodes run by workers in this process
    with Client(args.redis, settings=settings, workers=args.workers, observer=observer) as client:
        server.serve(client, settings, host=args.host, port=args.port)
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    private = None
    if args.private_key:
        try:
            with open(args.private_key) as f:
                private = f.read()
        except OSError as exc:
            raise AutoflowError(f"--private-key {args.private_key}: {exc.strerror}") from None
    token = _server().mint_token(
        Settings(),
        sub=args.sub,
        org=args.org,
        scopes=args.scope,
        ttl=args.ttl,
        private_key=private,
        algorithm=args.algorithm,
    )
    print(token)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoflow", description="Run and watch autoflow workflows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument(
            "--redis",
            "--url",
            dest="redis",
            default=None,
            help="backend URL (default: AUTOFLOW_REDIS_URL, else embedded SQLite in AUTOFLOW_HOME)",
        )
        return p

    p = add("worker", "execute nodes (imports MODULEs to register their nodes)")
    p.add_argument("modules", nargs="*", metavar="MODULE")
    p.add_argument("--workers", "-w", type=int, default=None, help="node workers (default NODE_CONCURRENCY)")
    p.add_argument("--kind", "-k", choices=KINDS, default="thread")
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds running nodes get to finish (default 30)",
    )
    p.add_argument(
        "--accept-code",
        action="store_true",
        help="run node code shipped by value from notebooks (needs AUTOFLOW_SECRET; see docs/notebook.md)",
    )
    p.set_defaults(func=cmd_worker)

    p = add("run", "start a workflow run and show its progress")
    p.add_argument("target", metavar="MODULE:WORKFLOW")
    p.add_argument("--input", "-i", default=None, help="workflow inputs as a JSON object")
    p.add_argument("--wait", action="store_true", help="wait for the end (always on the embedded backend)")
    p.add_argument("--priority", type=int, default=0)
    p.set_defaults(func=cmd_run)

    p = add("status", "show a run and its nodes")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = add("logs", "print a run's logs")
    p.add_argument("run_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--node", default=None, help="only this node's lines")
    p.set_defaults(func=cmd_logs)

    p = add("cancel", "cancel a run")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)

    p = add("stats", "queue statistics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = add("scheduler", "fire schedules and database triggers (safe to run as several replicas)")
    p.add_argument("modules", nargs="*", metavar="MODULE", help="modules defining the workflows to start")
    p.add_argument("--no-sync", action="store_true", help="do not turn @af.workflow(schedule=...) into schedules")
    p.set_defaults(func=cmd_scheduler)

    p = add("schedules", "list schedules")
    p.add_argument("--workflow", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_schedules)

    p = add("runs", "run history, newest first")
    p.add_argument("--workflow", default=None)
    p.add_argument("--status", default=None, choices=[s.value for s in RunStatus])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_runs)

    p = add("serve", "serve the REST API, webhooks, /metrics and the dashboard (autoflow[server])")
    p.add_argument("modules", nargs="*", metavar="MODULE", help="modules defining workflows and nodes")
    p.add_argument("--host", default=None, help="address to bind (default AUTOFLOW_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default AUTOFLOW_API_PORT, 8000)")
    p.add_argument(
        "--workers", "-w", type=int, default=None, help="node workers in this process (default: embedded only)"
    )
    p.set_defaults(func=cmd_serve)

    p = add("token", "print a signed API token (needs AUTOFLOW_JWT_SECRET, or --private-key)")
    p.add_argument("--org", required=True, help="the organization (tenant) the token acts for")
    p.add_argument("--sub", default="cli", help="the user or service (default 'cli')")
    p.add_argument("--scope", nargs="+", default=["read"], choices=["read", "execute", "admin"])
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
    p.add_argument("--private-key", default=None, help="PEM file to sign with (RS256/ES256) instead of the secret")
    p.add_argument("--algorithm", default=None, help="with --private-key: RS256 (default) or ES256")
    p.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except AutoflowError as exc:
        print(f"autoflow: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
