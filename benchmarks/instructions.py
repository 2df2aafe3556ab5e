"""Instructions per chain step, counted by valgrind: the worker's and redis-server's.

    python benchmarks/instructions.py [--chain 1000] [--runs 2] [--side worker|redis|both]

Throughput and CPU time move by tens of percent on a shared VM; instruction counts do
not (``valgrind --tool=callgrind`` counts the same for the same code and inputs, whatever
else the machine does). A 1,000-node chain (``benchmarks/flows.py``) runs ``--runs`` times
on a private ``redis-server`` through an in-process worker thread, each run as one
message (the continuation window is lifted: under valgrind's ~50x slowdown its 50 ms would
cut a chain into many messages and count a different workload). Counting covers those
runs only (``callgrind_control -i on/off``), not the start-up.

* ``worker``: the Python process under callgrind, one count per thread: the worker thread
  (the busiest), the others (the waiting client, heartbeat, consumers) summed;
* ``redis``: ``redis-server`` under callgrind, the Python side as usual.

Needs valgrind (``apt-get install valgrind``); without it, says so and exits 0. Takes
about a minute per side. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import free_port, git_revision  # noqa: E402


def _inner(url: str, chain: int, runs: int, counted_pid: int) -> None:
    """Run inside the measured setup: warm up, then count ``runs`` chains."""
    import autoflow as af
    import autoflow.engine.executor as executor
    from benchmarks import flows

    executor.CONTINUE_FOR = 1e9  # type: ignore[misc]  # one message per chain (see the docstring)
    wf = flows.CHAIN_1000 if chain == 1000 else flows.CHAIN_10
    settings = af.Settings(namespace=f"ins{os.getpid()}", scheduler=False)
    client = af.Client(url, settings=settings, workers=1)
    try:
        client.execute(wf, x=1).result(timeout=600)  # definitions, connections, scripts, caches
        subprocess.run(["callgrind_control", "-i", "on", str(counted_pid)], check=True, capture_output=True)
        for _ in range(runs):
            client.execute(wf, x=1).result(timeout=600)
        subprocess.run(["callgrind_control", "-i", "off", str(counted_pid)], check=True, capture_output=True)
    finally:
        client.close()


def _totals(prefix: Path) -> list[int]:
    """Instruction totals of a callgrind run, one per thread file, largest first."""
    counts = []
    for path in prefix.parent.glob(prefix.name + "*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                counts.append(int(line.split()[1]))
    return sorted(counts, reverse=True)


def _valgrind(out: Path, *argv: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv]


def _redis(port: int, workdir: Path, wrap: list[str] | None = None) -> subprocess.Popen[bytes]:
    argv = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen([*(wrap or []), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.3)
    return proc


def _stop(port: int, proc: subprocess.Popen[bytes]) -> None:
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    proc.wait(60)


def _python(url: str, args: argparse.Namespace, counted: str) -> list[str]:
    return [sys.executable, __file__, "--inner", url, "--chain", str(args.chain), "--runs", str(args.runs), counted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, choices=[10, 1000], default=1000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--side", choices=["worker", "redis", "both"], default="both")
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("counted", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        _inner(args.inner, args.chain, args.runs, os.getpid() if args.counted == "self" else int(args.counted))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind): nothing measured")
        return
    steps = args.chain * args.runs
    with tempfile.TemporaryDirectory(prefix="af-ins-") as tmp:
        workdir = Path(tmp)
        if args.side in ("worker", "both"):
            port = free_port()
            server = _redis(port, workdir)
            try:
                out = workdir / "worker.out"
                argv = _valgrind(out, "--separate-threads=yes", *_python(f"redis://127.0.0.1:{port}/0", args, "self"))
                subprocess.run(argv, check=True, capture_output=True)  # it counts itself
            finally:
                _stop(port, server)
            counts = _totals(out)
            print(f"worker thread: {counts[0] / steps:,.0f} instructions per step")
            print(f"the rest of the worker's process: {sum(counts[1:]) / steps:,.0f} per step")
        if args.side in ("redis", "both"):
            port = free_port()
            out = workdir / "redis.out"
            server = _redis(port, workdir, _valgrind(out))
            try:
                subprocess.run(_python(f"redis://127.0.0.1:{port}/0", args, str(server.pid)), check=True)
            finally:
                _stop(port, server)
            print(f"redis-server: {sum(_totals(out)) / steps:,.0f} instructions per step")
    print(f"{args.runs} x {args.chain}-node chain, revision {git_revision()}")


if __name__ == "__main__":
    main()
