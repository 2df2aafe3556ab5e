"""code_execution in real runs: every backend, a JSON definition, cancellation, the
node's timeout, and a process worker on Redis killed with -9 while the code runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoflow as af
from autoflow.models import NodeStatus, RunStatus
from autoflow.nodes import code_execution
from tests.conftest import clean_env
from tests.nodes.sandbox_fixtures import (  # noqa: F401
    MARK_CODE,
    alive,
    children_named,
    marked,
    need_bwrap,
    new_marker,
    wait_until,
    zombies,
)

pytestmark = pytest.mark.usefixtures("need_bwrap")
ROOT = Path(__file__).resolve().parents[2]

STATS = "def main(data):\n    print('rows:', len(data))\n    return {'total': sum(data), 'max': max(data)}\n"
SLEEPER = MARK_CODE + "import time\ntime.sleep(600)\n"


@af.node
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@af.workflow(name="code_stats")
def stats(n: int):
    return code_execution(code=STATS, data=numbers(n), timeout=20)


@af.workflow(name="code_sleeper")
def sleeper(marker: str):
    return code_execution(code=SLEEPER, data={"marker": marker}, timeout=600)


def test_a_workflow_runs_code_on_every_backend(client: af.Client) -> None:
    run = client.execute(stats, n=4)
    assert run.result(timeout=60) == {"total": 10, "max": 4}
    messages = [entry.message for entry in run.logs(node="code_execution")]
    assert "rows: 4" in messages


def test_a_json_definition_names_the_builtin_type(client: af.Client) -> None:
    definition = {
        "name": "code_from_json",
        "nodes": [
            {"id": "source", "type": "tests.nodes.test_code_execution_runs:numbers", "config": {"n": 3}},
            {"id": "square", "type": "code_execution", "config": {"code": "result = [x * x for x in data]"}},
        ],
        "edges": [{"source": "source", "target": "square", "input": "data"}],
        "output": "square",
    }
    flow = af.Workflow.from_dict(definition)
    assert flow.to_dict()["nodes"][1]["type"] == "code_execution"
    assert client.execute(flow).result(timeout=60) == [1, 4, 9]


def test_bad_config_fails_the_node_naming_the_key(client: af.Client) -> None:
    @af.workflow(name="code_bad_config")
    def bad(x: int):
        return code_execution(code="result = data", data=x, memory_mb=1)

    with pytest.raises(af.RunFailed) as failed:
        client.execute(bad, x=1).result(timeout=60)
    assert failed.value.error_type == "InputError" and "memory_mb" in failed.value.message


def _wait_running(run: af.Run, marker: str) -> set[tuple[int, int]]:
    wait_until(lambda: run.status().nodes["code_execution"].status is NodeStatus.RUNNING, 30, "the node to run")
    wait_until(lambda: bool(marked(marker)), 30, "the sandbox to start")
    return marked(marker)


@pytest.mark.parametrize("client", ["sqlite"], indirect=True)
def test_cancelling_the_run_kills_the_sandbox(client: af.Client) -> None:
    marker = new_marker()
    run = client.execute(sleeper, marker=marker)
    sandbox = _wait_running(run, marker)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=10).status is RunStatus.CANCELLED
    wait_until(lambda: not alive(sandbox), 1.0, "the sandbox to die")
    assert time.monotonic() - started < 1.5
    assert not zombies(marker)


@pytest.mark.parametrize("client", ["sqlite"], indirect=True)
def test_the_nodes_timeout_kills_the_sandbox(client: af.Client) -> None:
    marker = new_marker()

    @af.workflow(name="code_node_timeout")
    def capped(marker: str):
        return code_execution.with_options(timeout=0.5)(code=SLEEPER, data={"marker": marker}, timeout=600)

    run = client.execute(capped, marker=marker)
    with pytest.raises(af.RunFailed) as failed:
        run.result(timeout=30)
    assert failed.value.error_type in ("NodeTimeout", "CodeTimeout")  # whichever noticed first
    wait_until(lambda: not marked(marker), 1.0, "the sandbox to die")


@pytest.fixture
def process_worker(redis_url: str, settings: af.Settings) -> Iterator[tuple[subprocess.Popen[bytes], af.Client]]:
    env = clean_env(AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=settings.namespace)
    command = ["worker", "tests.nodes.test_code_execution_runs", "--kind", "process", "--workers", "1"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "autoflow.cli", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    made = af.Client(redis_url, settings=settings, workers=0)
    try:
        yield worker, made
    finally:
        made.close()
        with_group = os.getpgid(worker.pid) if worker.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGKILL)
        worker.wait(10)


def test_a_process_worker_on_redis_runs_code_cancels_it_and_takes_it_down_when_killed(
    process_worker: tuple[subprocess.Popen[bytes], af.Client],
) -> None:
    worker, client = process_worker
    assert client.execute(stats, n=5).result(timeout=60) == {"total": 15, "max": 5}
    marker = new_marker()
    run = client.execute(sleeper, marker=marker)
    sandbox = _wait_running(run, marker)
    run.cancel()  # the worker interrupts the node (SIGALRM); the node kills its sandbox
    assert run.wait(timeout=10).status is RunStatus.CANCELLED
    wait_until(lambda: not alive(sandbox), 1.5, "the sandbox to die on cancel")
    marker = new_marker()
    run = client.execute(sleeper, marker=marker)
    sandbox = _wait_running(run, marker)
    bwraps = {p for child in _descendants(worker.pid) for p in children_named(child, "bwrap")}
    assert bwraps, "the sandbox's bwrap runs under the worker"
    os.killpg(worker.pid, signal.SIGKILL)  # the worker's processes die; the sandbox has its own session
    worker.wait(10)
    took = wait_until(lambda: not alive(sandbox | bwraps), 5, "the sandbox to die with the worker")
    assert took < 1.0


def _descendants(pid: int) -> set[int]:
    found, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent and int(entry) not in found:
                    found.add(int(entry))
                    todo.append(int(entry))
    return found
