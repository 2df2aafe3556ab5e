"""Several processes firing at once, as on Kubernetes: three ``autoflow scheduler``
replicas, and two Huey consumers with periodic tasks on. One run per slot, always."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoflow as af
from tests.conftest import clean_env
from tests.triggers import flows
from tests.triggers.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, settings: af.Settings) -> dict[str, str]:
    return clean_env(
        AUTOFLOW_HOME=str(settings.home),
        AUTOFLOW_NAMESPACE=settings.namespace,
        AUTOFLOW_SCHEDULER_LEASE_SECONDS="2",
    )


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def one_run_per_slot(client: af.Client, key: str, at_least: int) -> list[str]:
    runs = client.runs(workflow="trg_tick", limit=10_000)
    per_slot = collections.Counter(r.trigger_data[key] for r in runs)
    assert len(per_slot) >= at_least
    assert max(per_slot.values()) == 1, per_slot
    return sorted(per_slot)


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_three_scheduler_replicas_fire_each_slot_once(
    backend: str,
    request: pytest.FixtureRequest,
    settings: af.Settings,
    env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else f"sqlite:///{settings.home / 'autoflow.db'}"
    with af.Client(url, settings=settings, workers=0, scheduler=False) as client:
        client.schedules.create(
            flows.tick, cron="* * * * * *", overlap="allow_all", slot_input="slot", id="every_second"
        )
        for i in range(3):
            processes.append(
                spawn(
                    ["-m", "autoflow.cli", "scheduler", "tests.triggers.flows", "--url", url],
                    env,
                    tmp_path / f"s{i}.log",
                )
            )
        wait_for(lambda: len(client.runs(workflow="trg_tick", limit=100)) >= 5, timeout=30)
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            assert proc.wait(15) == 0, (tmp_path / "s0.log").read_text()
        one_run_per_slot(client, "slot", 5)
        synced = client.schedules.get("trg_nightly")  # the decorator schedule of tests.triggers.flows
        assert (synced.source, synced.timezone) == ("decorator", "America/New_York")


HUEY_APP = """
import os
import autoflow as af
from huey import RedisHuey
from huey.consumer import Consumer, Scheduler
from autoflow.triggers import huey_periodic
from tests.triggers import flows

huey = RedisHuey(os.environ["HUEY_NAME"], url=os.environ["REDIS_URL"])
task = huey_periodic(huey, lambda: af.Client(os.environ["REDIS_URL"], workers=0, scheduler=False),
                     flows.tick, cron="* * * * * *", slot_input="slot", name="tick_every_second")

@huey.signal("complete")
def count(signal, task, *args):  # how many copies of the periodic task ran, all consumers together
    huey.storage.conn.incr(os.environ["HUEY_NAME"] + ":executed:" + str(os.getpid()))

if __name__ == "__main__":
    Scheduler.periodic_task_seconds = 1  # check every second (Huey's default: every minute)
    Consumer(huey, workers=2, periodic=True, check_worker_health=False).run()
"""


def test_two_huey_consumers_with_periodic_tasks_start_one_run_per_slot(
    redis_url: str,
    settings: af.Settings,
    env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    app = tmp_path / "huey_app.py"
    app.write_text(HUEY_APP)
    name = f"hueyt{uuid.uuid4().hex[:8]}"
    env = {**env, "HUEY_NAME": name, "REDIS_URL": redis_url, "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    for i in range(2):
        processes.append(spawn([str(app)], env, tmp_path / f"c{i}.log"))
    with af.Client(redis_url, settings=settings, workers=0, scheduler=False) as client:
        wait_for(lambda: len(client.runs(workflow="trg_tick", limit=100)) >= 5, timeout=30)
        for proc in processes:
            proc.send_signal(signal.SIGINT)
        for proc in processes:
            proc.wait(15)
        slots = one_run_per_slot(client, "slot", 5)
        r = client.backend.store.r  # type: ignore[attr-defined]
        fired = [int(r.get(key)) for key in r.scan_iter(match=f"{name}:executed:*")]
        # Both consumers fired the task for the same slots (how many each depends on when
        # it started, under load a few seconds apart), and still every slot has one run.
        assert len(fired) == 2 and min(fired) >= 2, fired
        assert sum(fired) > len(slots), (fired, len(slots))
        assert {r.trigger for r in client.runs(workflow="trg_tick")} == {"schedule"}
