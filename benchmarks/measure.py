"""The measurements: raw Huey and autoflow throughput, latency, and graph-size runs.

Each function takes a :class:`benchmarks.harness.Setup` and returns plain numbers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import autoflow as af
from benchmarks import flows
from benchmarks.harness import CHAIN_LEN, CHAINS, Child, Setup, pct, proc_cpu, wait_until

__all__ = ["af_big", "af_latency", "af_many", "af_throughput", "raw_latency", "raw_throughput", "wait_run"]


# -- raw Huey -----------------------------------------------------------------------------------
def _cpu(s: Setup, worker: Child) -> tuple[float, float, float]:
    """CPU seconds so far of the worker, the Redis server (if ours) and this process."""
    store = proc_cpu(s.redis_pid) if s.redis_pid else float("nan")
    return proc_cpu(worker.pid), store, time.process_time()


def _cpu_delta(s: Setup, worker: Child, before: tuple[float, float, float]) -> dict[str, float]:
    after = _cpu(s, worker)
    return {
        "worker_cpu_s": after[0] - before[0],
        "redis_cpu_s": after[1] - before[1],
        "client_cpu_s": after[2] - before[2],
    }


def raw_throughput(s: Setup, chains: int = CHAINS, length: int = CHAIN_LEN) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    cpu0 = _cpu(s, s.raw_proc)
    t0 = time.time()
    for c in range(chains):
        s.starter(tag, c, 0, length)
    t_sub = time.time()
    wait_until(lambda: s.huey.result_count() >= chains, 300, "raw Huey chains", s.procs)
    ends = [s.huey.get(f"done:{tag}:{c}") for c in range(chains)]
    if any(e is None for e in ends):
        raise RuntimeError("a raw Huey chain did not record its end")
    wall = max(ends) - t0
    return {
        "steps": chains * length,
        "wall_s": wall,
        "steps_per_s": chains * length / wall,
        "submit_s": t_sub - t0,
        **_cpu_delta(s, s.raw_proc, cpu0),
    }


def raw_latency(s: Setup, runs: int, length: int = CHAIN_LEN) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    engine, observed = [], []
    for c in range(runs):
        key = f"done:{tag}:{c}"
        t0, m0 = time.time(), time.monotonic()
        s.starter(tag, c, 0, length)
        # Spin-poll with a read (peek): approximates system latency. A popping get() would be
        # a write transaction every 0.5 ms on SQLite, in the consumer's way.
        while (end := s.huey.get(key, peek=True)) is None:
            time.sleep(0.0005)
            if time.monotonic() - m0 > 60:
                s.raw_proc.check()
                raise TimeoutError("raw Huey latency chain")
        observed.append(time.monotonic() - m0)
        s.huey.get(key)  # remove it
        engine.append(end - t0)
    return _lat_summary(engine, observed)


# -- autoflow -----------------------------------------------------------------------------------
def _ts(value: Any) -> float:
    return float(value.timestamp())


def af_throughput(s: Setup, wf: af.Workflow = flows.CHAIN_10, runs: int = CHAINS) -> dict[str, float]:
    nodes = len(wf.calls)
    cpu0 = _cpu(s, s.af_proc)
    t0 = time.time()
    handles = [s.client.execute(wf, x=i) for i in range(runs)]
    t_sub = time.time()
    # The last run submitted is among the last to end: waiting for it first means the other
    # waits return at once (one status read each) instead of polling while the worker runs.
    infos = [wait_run(s, h.id, 300) for h in reversed(handles)]
    bad = [i for i in infos if i.status is not af.RunStatus.COMPLETED]
    if bad:
        raise RuntimeError(f"{len(bad)} run(s) did not complete, e.g. {bad[0].summary()}: {bad[0].error}")
    wall = max(_ts(i.finished_at) for i in infos) - t0
    run_lat = [_ts(i.finished_at) - _ts(i.created_at) for i in infos]
    return {
        "steps": runs * nodes,
        "wall_s": wall,
        "steps_per_s": runs * nodes / wall,
        "submit_s": t_sub - t0,
        **_cpu_delta(s, s.af_proc, cpu0),
        "run_p50_ms": pct(run_lat, 50) * 1000,
    }


def wait_run(s: Setup, run_id: str, timeout: float) -> af.RunInfo:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s.client.wait(run_id, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
        except af.RunTimeout:
            s.af_proc.check()
            if time.monotonic() > deadline:
                raise


def af_latency(s: Setup, runs: int) -> dict[str, Any]:
    engine, observed, admission, execution = [], [], [], []
    cpu0 = _cpu(s, s.af_proc)
    for i in range(runs):
        m0 = time.monotonic()
        run = s.client.execute(flows.CHAIN_10, x=i)
        info = wait_run(s, run.id, 60)
        observed.append(time.monotonic() - m0)
        if info.status is not af.RunStatus.COMPLETED or info.output != i:
            raise RuntimeError(f"latency run {info.summary()} did not complete correctly")
        created, started, finished = _ts(info.created_at), _ts(info.started_at), _ts(info.finished_at)
        engine.append(finished - created)
        admission.append(started - created)
        execution.append(finished - started)
    out = _lat_summary(engine, observed)
    out["admission_p50_ms"] = pct(admission, 50) * 1000
    out["execution_p50_ms"] = pct(execution, 50) * 1000
    out["per_node_ms"] = pct(execution, 50) * 1000 / len(flows.CHAIN_10.calls)
    out.update(_per_node_cpu(_cpu_delta(s, s.af_proc, cpu0), runs * len(flows.CHAIN_10.calls)))
    return out


def _lat_summary(engine: list[float], observed: list[float]) -> dict[str, Any]:
    return {
        "runs": len(engine),
        "p50_ms": pct(engine, 50) * 1000,
        "p95_ms": pct(engine, 95) * 1000,
        "max_ms": max(engine) * 1000,
        "observed_p50_ms": pct(observed, 50) * 1000,
        "observed_p95_ms": pct(observed, 95) * 1000,
        "observed_all": observed,
    }


def _wait_light(s: Setup, wf: af.Workflow, run_id: str, timeout: float) -> af.RunInfo:
    """Wait for a big run without fetching its 1,000 nodes on every poll (client.wait reads
    the whole run each time: on SQLite every 50 ms, which would steal CPU from the worker)."""
    deadline = time.monotonic() + timeout
    while True:
        newest = s.client.runs(workflow=wf.name, limit=1)  # runs alone: the newest is ours
        if newest and newest[0].id == run_id and newest[0].finished:
            return s.client.status(run_id)
        s.af_proc.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} of {wf.name}")
        time.sleep(0.1)


def af_big(s: Setup, wf: af.Workflow, label: str) -> dict[str, Any]:
    """One run of a big graph, alone: nodes/s and ms/node (engine clock: started -> finished)."""
    cpu0 = _cpu(s, s.af_proc)
    m0 = time.monotonic()
    run = s.client.execute(wf, x=1)
    submit = time.monotonic() - m0
    info = _wait_light(s, wf, run.id, 600)
    if info.status is not af.RunStatus.COMPLETED:
        raise RuntimeError(f"{label}: {info.summary()} {info.error}")
    n = len(wf.calls)
    exec_s = _ts(info.finished_at) - _ts(info.started_at)
    out: dict[str, Any] = {
        "graph": label,
        "nodes": n,
        "submit_ms": submit * 1000,
        "admission_ms": (_ts(info.started_at) - _ts(info.created_at)) * 1000,
        "exec_s": exec_s,
        "nodes_per_s": n / exec_s,
        "ms_per_node": exec_s * 1000 / n,
        **_per_node_cpu(_cpu_delta(s, s.af_proc, cpu0), n),
    }
    t = time.monotonic()
    s.client.status(run.id)
    out["status_call_ms"] = (time.monotonic() - t) * 1000  # cost of one client.status on this run
    if wf is flows.CHAIN_1000:  # per-step cost early vs late in the chain: must not grow
        ends = sorted(_ts(node.finished_at) for node in info.nodes.values())
        out["first100_ms_per_node"] = (ends[100] - ends[0]) * 1000 / 100
        out["last100_ms_per_node"] = (ends[-1] - ends[-101]) * 1000 / 100
    return out


def af_map(s: Setup, n: int) -> dict[str, Any]:
    """One run of a ``.map`` over ``n`` items: items/s from the list's end to the map's."""
    cpu0 = _cpu(s, s.af_proc)
    m0 = time.monotonic()
    run = s.client.execute(flows.MAP, n=n)
    submit = time.monotonic() - m0
    info = _wait_light(s, flows.MAP, run.id, 900)
    if info.status is not af.RunStatus.COMPLETED or info.output != n:
        raise RuntimeError(f"map of {n}: {info.summary()} {info.error}")
    # From the list being ready to the map's results gathered (the map node's own
    # started_at is that of its last step, the gather).
    exec_s = _ts(info.nodes["noop"].finished_at) - _ts(info.nodes["items"].finished_at)
    t = time.monotonic()
    s.client.status(run.id)
    return {
        "graph": f"map over {n:,} items (1 run)",
        "nodes": n,
        "submit_ms": submit * 1000,
        "exec_s": exec_s,
        "nodes_per_s": n / exec_s,
        "ms_per_node": exec_s * 1000 / n,
        "status_call_ms": (time.monotonic() - t) * 1000,
        **_per_node_cpu(_cpu_delta(s, s.af_proc, cpu0), n),
    }


def af_many(s: Setup, wf: af.Workflow, runs: int, label: str) -> dict[str, Any]:
    """``runs`` concurrent runs of a small graph, the same node count as one big graph."""
    res = af_throughput(s, wf, runs)
    n = res["steps"]
    return {
        "graph": label,
        "nodes": n,
        "exec_s": res["wall_s"],
        "nodes_per_s": res["steps_per_s"],
        "ms_per_node": res["wall_s"] * 1000 / n,
        "submit_ms": res["submit_s"] * 1000,
        **_per_node_cpu(res, n),
    }


def _per_node_cpu(cpu: dict[str, float], nodes: int) -> dict[str, float]:
    return {
        "worker_cpu_ms_per_node": cpu["worker_cpu_s"] * 1000 / nodes,
        "redis_cpu_ms_per_node": cpu["redis_cpu_s"] * 1000 / nodes,
    }
