"""code_execution: what a sandboxed call costs, against the baselines in the same run.

    python benchmarks/bench_code.py [--calls N] [--json FILE]

Each line runs the same trivial code (``result = sum(data)`` on 100 integers) ``--calls``
times, one call at a time, the lines taking turns, and reports milliseconds per call
(mean, p50, p95):

1. ``exec in-process``: ``compile`` + ``exec`` in this process: no isolation at all, the floor;
2. ``fresh interpreter``: the runner in a plain ``python -I -S`` child (what
   ``AUTOFLOW_ALLOW_UNSANDBOXED_CODE`` runs where bwrap is unusable): the cost of a process;
3. ``bwrap, one stage``: the sandbox as a non-root worker starts it (one bwrap);
4. ``bwrap, as root``: the sandbox as a root worker starts it (a privileged bwrap, a
   shell and setpriv in front, so that the code runs as ``nobody``): what ``run_code``
   does on this machine when run as root;
5. ``node in a run``: a one-node workflow with ``code_execution`` on an immediate client,
   against the same workflow with a plain ``@af.node`` (the engine's own cost).

Then two threads call the sandbox at once (calls/s), as a worker with two threads would.
Figures: docs/performance.md ("code_execution").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/bench_code.py` from anywhere

import autoflow as af  # noqa: E402
from autoflow import codec  # noqa: E402
from autoflow.nodes import code_execution  # noqa: E402
from autoflow.nodes.sandbox import CodeLimits, SandboxInfo, _run, check_sandbox  # noqa: E402

CODE = "result = sum(data)"
DATA = list(range(100))


def timed(lines: list[tuple[str, Callable[[], Any]]], calls: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each line. The lines take turns (one call each, round
    after round), so that a busy moment of the machine weighs on all of them alike."""
    for _, fn in lines:
        fn()  # warm-up (imports, the sandbox probe)
    samples: dict[str, list[float]] = {name: [] for name, _ in lines}
    for _ in range(calls):
        for name, fn in lines:
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1000)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {
            "mean_ms": statistics.fmean(values),
            "p50_ms": values[len(values) // 2],
            "p95_ms": values[min(len(values) - 1, int(len(values) * 0.95))],
        }
    return out


def sandboxed(info: SandboxInfo) -> Callable[[], Any]:
    payload = codec.dumps({"code": CODE, "data": DATA})

    def call() -> Any:
        value = _run(info, CodeLimits(), payload, lambda: False, None).value
        assert value == sum(DATA), value
        return value

    return call


def in_process() -> Any:
    namespace: dict[str, Any] = {"data": DATA}
    exec(compile(CODE, "<code>", "exec"), namespace)
    return namespace["result"]


@af.node
def plain(data: list[int]) -> int:
    return sum(data)


@af.workflow(name="bench_plain")
def plain_flow(data: list[int]):
    return plain(data)


@af.workflow(name="bench_code")
def code_flow(data: list[int]):
    return code_execution(code=CODE, data=data)


def parallel(fn: Callable[[], Any], seconds: float = 5.0, threads: int = 2) -> float:
    """Calls per second with ``threads`` callers for ``seconds``."""
    done = [0] * threads
    until = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < until:
            fn()
            done[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    info = check_sandbox()
    if not info.available:
        sys.exit(f"the sandbox is unavailable here: {info.problem}")
    print(f"bubblewrap {info.version}, python {info.python}, uid {os.geteuid()}, load {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {}
    lines: list[tuple[str, Callable[[], Any]]] = [
        ("exec in-process", in_process),
        ("fresh interpreter", sandboxed(dataclasses.replace(info, available=False))),
        ("bwrap, one stage", sandboxed(dataclasses.replace(info, drops_root=False))),
    ]
    if info.drops_root:
        lines.append(("bwrap, as root", sandboxed(info)))
    with af.Client(immediate=True) as client:
        lines.append(("run: plain node", lambda: client.execute(plain_flow, data=DATA).result(timeout=30)))
        lines.append(("run: code_execution", lambda: client.execute(code_flow, data=DATA).result(timeout=30)))
        results.update(timed(lines, args.calls))
    print(f"{'':24} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8}   ({args.calls} calls each, one at a time)")
    for name, figures in results.items():
        print(f"{name:24} {figures['mean_ms']:8.1f} {figures['p50_ms']:8.1f} {figures['p95_ms']:8.1f}")
    base = results["fresh interpreter"]["p50_ms"]
    sandbox = results["bwrap, as root" if info.drops_root else "bwrap, one stage"]["p50_ms"]
    print(f"sandbox overhead over a fresh interpreter (p50): {sandbox - base:+.1f} ms per call")
    rate = parallel(sandboxed(info))
    results["parallel_calls_per_s_2_threads"] = rate
    print(f"two threads calling the sandbox: {rate:.1f} calls/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
