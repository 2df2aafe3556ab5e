"""The raw Huey baseline: a no-op task that enqueues the next step of its chain.

Configured from the environment so that the benchmark driver and the consumer process
build the same Huey:

* ``BENCH_BACKEND``: ``redis`` (``PriorityRedisHuey``, the class autoflow's Redis
  transport uses) or ``sqlite`` (``SqliteHuey``);
* ``BENCH_REDIS_URL`` / ``BENCH_SQLITE_FILE``; ``BENCH_HUEY_NAME``.

The last step of a chain stores ``time.time()`` under ``done:<tag>:<chain>`` with
``huey.put`` (one result per chain, as autoflow stores one finished state per run).

Run the consumer with the same worker setup as ``autoflow worker --workers 2 --kind thread``
and the same polling parameters autoflow's consumer uses::

    python -m benchmarks.rawhuey            # 2 thread workers, until SIGTERM/SIGINT
"""

from __future__ import annotations

import os
import time

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey

__all__ = ["CONSUMER_OPTIONS", "huey", "make_huey", "step"]

#: The polling parameters of autoflow's node consumer (engine/dispatch.py), for fairness.
CONSUMER_OPTIONS = {
    "workers": 2,
    "worker_type": os.environ.get("BENCH_WORKER_KIND", "thread"),
    "periodic": False,
    "initial_delay": 0.005,
    "backoff": 1.2,
    "max_delay": 0.25,
    "check_worker_health": True,
    "health_check_interval": 1.0,
}


def make_huey(backend: str | None = None, target: str | None = None, name: str | None = None) -> Huey:
    """A Huey on Redis (``target`` = URL) or SQLite (``target`` = file); the arguments
    default to ``BENCH_BACKEND``, ``BENCH_REDIS_URL``/``BENCH_SQLITE_FILE``, ``BENCH_HUEY_NAME``."""
    backend = backend or os.environ.get("BENCH_BACKEND", "redis")
    name = name or os.environ.get("BENCH_HUEY_NAME", "bench_raw")
    if backend == "redis":
        return PriorityRedisHuey(name, url=target or os.environ.get("BENCH_REDIS_URL"), utc=True)
    if backend == "sqlite":
        filename = target or os.environ.get("BENCH_SQLITE_FILE", "bench-raw-huey.db")
        return SqliteHuey(name, filename=filename, utc=True, timeout=30)
    raise ValueError(f"BENCH_BACKEND must be redis or sqlite, got {backend!r}")


#: The consumer's Huey (built from the environment; the driver builds its own with make_huey).
huey = make_huey()


@huey.task()
def step(tag: str, chain: int, i: int, n: int) -> None:
    """Step ``i`` of ``n`` of one chain: enqueue the next, or record the end."""
    if i + 1 < n:
        step(tag, chain, i + 1, n)
    else:
        huey.put(f"done:{tag}:{chain}", time.time())


if __name__ == "__main__":
    # Run the consumer of the imported module, so tasks are registered under the name the
    # producer uses ("benchmarks.rawhuey.step"), not "__main__.step".
    from benchmarks import rawhuey

    rawhuey.huey.create_consumer(**CONSUMER_OPTIONS).run()
