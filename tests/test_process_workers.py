"""Process workers really interrupt a node: timeouts and cancellation via SIGALRM."""

from __future__ import annotations

import contextlib
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
from tests.conftest import clean_env
from tests.resources import dags

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(redis_url: str, settings: af.Settings) -> Iterator[af.Client]:
    env = clean_env(AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=settings.namespace)
    worker = subprocess.Popen(
        [sys.executable, "-m", "autoflow.cli", "worker", "tests.resources.dags", "--workers", "1", "--kind", "process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    made = af.Client(redis_url, settings=settings, workers=0)
    try:
        yield made
    finally:
        made.close()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


def test_a_timeout_interrupts_a_blocking_call(client: af.Client) -> None:
    run = client.execute(dags.overrunning, seconds=10)
    with pytest.raises(af.RunFailed) as caught:
        run.result(timeout=30)
    assert caught.value.error_type == "NodeTimeout"
    node = run.status().nodes["overrun"]
    assert node.duration is not None and node.duration < 2.0  # interrupted, not waited out


def test_cancel_interrupts_a_node_that_ignores_it(client: af.Client) -> None:
    run = client.execute(dags.deaf_flow, seconds=30)
    deadline = time.monotonic() + 20
    while run.status().nodes["deaf"].status is not NodeStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=10).status is RunStatus.CANCELLED
    assert time.monotonic() - started < 1.5
    # The worker process was interrupted, not abandoned: it takes the next run at once.
    assert client.execute(dags.diamond, x=2).result(timeout=10) == 8


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_process_workers_die_with_a_killed_parent_before_running_any_node(
    redis_url: str, settings: af.Settings
) -> None:
    """Killed before its children ran a node, `autoflow worker --kind process` leaves no
    orphan behind: each child asks to die with its parent as soon as it starts."""
    env = clean_env(AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=settings.namespace)
    worker = subprocess.Popen(
        [sys.executable, "-m", "autoflow.cli", "worker", "tests.resources.dags", "--workers", "2", "--kind", "process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while len(children) < 2:  # two workers (plus Huey's scheduler process)
            assert time.monotonic() < deadline, "the worker did not fork its processes"
            time.sleep(0.05)
            children = _children(worker.pid)
        time.sleep(0.3)  # let them reach their idle loop (they have run no node)
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in children):
            assert time.monotonic() < deadline, f"orphaned worker processes: {[c for c in children if _alive(c)]}"
            time.sleep(0.05)
    finally:
        for pid in [worker.pid, *children]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
