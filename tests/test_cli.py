"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parent.parent


def autoflow(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoflow.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(AUTOFLOW_HOME=str(tmp_path / "home"))


def test_run_on_the_embedded_default_shows_progress_logs_and_result(env: dict[str, str]) -> None:
    done = autoflow("run", "tests.resources.dags:diamond", "--input", '{"x": 5}', env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "3/3 nodes  completed" in out and "[double] completed in" in out
    assert out.rstrip().endswith("20")
    run_id = out.split()[1]
    status = autoflow("status", run_id, env=env)
    assert status.returncode == 0 and "diamond completed 3/3" in status.stdout and "double_2" in status.stdout
    logs = autoflow("logs", run_id, "--node", "add", env=env)
    assert "[add] started" in logs.stdout and "[double]" not in logs.stdout
    runs = autoflow("runs", env=env)
    assert run_id in runs.stdout
    stats = autoflow("stats", "--json", env=env)
    assert '"completed": 1' in stats.stdout


def test_a_failed_run_exits_1_and_names_the_node(env: dict[str, str]) -> None:
    done = autoflow("run", "tests.resources.dags:broken", env=env)
    assert done.returncode == 1
    assert "node boom: RuntimeError: boom 1" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "tests.resources.dags:diamond", "--input", "{x"], "--input is not valid JSON"),
        (["run", "tests.resources.dags:diamond", "--input", '{"x": "five"}'], "input 'x'"),
        (["run", "no.such.module:wf", "--input", "{}"], "cannot import module 'no.such.module'"),
        (["run", "tests.resources.dags:nope"], "no workflow named 'nope'"),
        (["run", "tests.resources.dags"], "expected MODULE:WORKFLOW"),
        (["status", "nope"], "no run 'nope'"),
        (["stats", "--redis", "redis://127.0.0.1:1/0"], "redis://127.0.0.1:1/0 is not usable"),
    ],
)
def test_bad_input_is_a_one_line_error(env: dict[str, str], args: list[str], message: str) -> None:
    done = autoflow(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def worker(env: dict[str, str], redis_url: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    env = dict(env, AUTOFLOW_REDIS_URL=redis_url, AUTOFLOW_NAMESPACE=f"cli{os.getpid()}{time.time_ns() % 10**6}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autoflow.cli",
            "worker",
            "tests.resources.dags",
            "--workers",
            "2",
            "--kind",
            "process",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    yield proc, env
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    if proc.stdout:
        proc.stdout.close()


def test_redis_worker_runs_cancels_and_stops_gracefully(
    worker: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    proc, env = worker
    done = autoflow("run", "tests.resources.dags:chain10", "--input", '{"x": 1}', "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10/10 nodes  completed" in done.stdout and done.stdout.rstrip().endswith("11")

    started = autoflow("run", "tests.resources.dags:slow", "--input", '{"seconds": 30}', env=env)
    assert started.returncode == 0  # without --wait on Redis: submit and return
    run_id = started.stdout.split()[1]
    deadline = time.monotonic() + 20
    while "running" not in autoflow("status", run_id, env=env).stdout.split("sleepy")[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = autoflow("cancel", run_id, env=env)
    assert cancelled.returncode == 0
    follow = autoflow("logs", run_id, "--follow", env=env, timeout=20)
    assert "run cancelled" in follow.stdout

    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    assert "2 process worker(s)" in (proc.stdout.read() if proc.stdout else "")
