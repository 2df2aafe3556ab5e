"""``autoflow serve`` and ``autoflow token`` as a user runs them: a subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autoflow.cli import main
from tests.conftest import free_port
from tests.server.conftest import SECRET

ROOT = Path(__file__).resolve().parents[2]


def test_serve_and_token(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AUTOFLOW_JWT_SECRET": SECRET,
        "AUTOFLOW_REDIS_URL": redis_url,
        "AUTOFLOW_NAMESPACE": f"cli{port}",
        "PYTHONPATH": str(ROOT),
    }
    token = subprocess.run(
        [sys.executable, "-m", "autoflow.cli", "token", "--org", "acme", "--scope", "execute"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cmd = [sys.executable, "-m", "autoflow.cli", "serve", "tests.server.flows", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "autoflow serve did not come up"
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {token}"}
        run = httpx.post(
            f"{base}/api/executions/execute", json={"workflowId": "api_flow", "inputs": {"a": 2}}, headers=headers
        )
        assert run.status_code == 202, run.text
        run_id = run.json()["executionId"]
        deadline = time.monotonic() + 30
        while (status := httpx.get(f"{base}/api/executions/{run_id}/status", headers=headers).json())[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["output"] == 6
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}" in out and SECRET not in out and token not in out


def test_cli_errors_name_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--org", "acme"]) == 2  # no secret configured
    assert "AUTOFLOW_JWT_SECRET" in capsys.readouterr().err
    assert main(["serve", "--port", "0"]) == 2  # no JWT key: refused before binding
    assert "AUTOFLOW_JWT_PUBLIC_KEY_FILE" in capsys.readouterr().err
