"""The deploy files, checked offline: hadolint on the Dockerfile, kubernetes-validate
(strict) and yamllint on the manifests, and every setting autoflow reads is present in
the compose file and in the manifests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import autoflow as af
from autoflow.server import create_app, mint_token
from tests.server.conftest import start_server

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is missing: pip install -e '.[test]' installs it")
    return found


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def setting_names() -> list[str]:
    names = []
    for field in af.Settings.model_fields.values():
        alias = field.validation_alias
        choices = [alias] if isinstance(alias, str) else list(getattr(alias, "choices", []))
        names += [c for c in choices if isinstance(c, str) and c.isupper()]
    return names


def test_dockerfile_passes_hadolint_and_runs_as_non_root() -> None:
    result = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    user = [line for line in lines if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert all("latest" not in line for line in lines if line.startswith("FROM"))


def test_manifests_validate_offline() -> None:
    result = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", *map(str, MANIFESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lint = subprocess.run(
        [
            _tool("yamllint"),
            "-d",
            "{extends: relaxed, rules: {line-length: {max: 140}}}",
            str(ROOT / "docker-compose.yml"),
            *map(str, MANIFESTS),
        ],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout


def test_the_validator_catches_mistakes(tmp_path: Path) -> None:
    bad = _docs(ROOT / "deploy" / "k8s" / "api.yaml")[0]
    bad["spec"]["replicas"] = "three"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([_tool("kubernetes-validate"), "--strict", str(tmp_path / "bad.yaml")], capture_output=True)
    assert result.returncode != 0


def test_deployments_have_probes_limits_and_no_root() -> None:
    found = {}
    for path in MANIFESTS:
        for doc in _docs(path):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                found[doc["metadata"]["name"]] = doc
    assert {"autoflow-api", "autoflow-worker", "autoflow-scheduler", "autoflow-redis"} <= set(found)
    for name, doc in found.items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["resources"]["limits"]["memory"], name
            if name != "autoflow-scheduler":
                assert "readinessProbe" in container and "livenessProbe" in container, name
    assert found["autoflow-scheduler"]["spec"]["replicas"] == 1
    worker = found["autoflow-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > 50  # longer than --shutdown-timeout


def test_compose_runs_redis_durably_and_every_process() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "ticker"} <= set(services)
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert services["ticker"]["command"][0] == "scheduler"
    assert services["worker"]["command"][0] == "worker" and services["api"]["command"][0] == "serve"


@pytest.mark.parametrize("name", setting_names())
def test_every_setting_is_in_the_compose_file_and_manifests(name: str) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    manifests = "\n".join(p.read_text() for p in MANIFESTS)
    assert name in compose, f"{name} is missing from docker-compose.yml"
    assert name in manifests, f"{name} is missing from deploy/k8s/"


def _compose_env(service: str) -> dict[str, str]:
    """The environment compose gives ``service``, with ${VAR:-default} and ${VAR:?} resolved
    as on a machine that sets only the required variables."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {str(k): str(v) for k, v in compose["services"][service]["environment"].items()}
    required = {"AUTOFLOW_SECRET": "s" * 40, "AUTOFLOW_JWT_SECRET": "j" * 40}

    def resolve(value: str) -> str:
        return re.sub(r"\$\{(\w+)(:-([^}]*)|:\?[^}]*)?\}", lambda m: required.get(m.group(1), m.group(3) or ""), value)

    return {k: resolve(v) for k, v in env.items()}


def _k8s_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for doc in _docs(ROOT / "deploy" / "k8s" / "config.yaml"):
        env.update({k: str(v) for k, v in (doc.get("data") or doc.get("stringData") or {}).items()})
    return env


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_the_shipped_environment_starts_the_api(source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings as the compose file or the manifests give them build a working app (empty
    optional variables mean "unset", not "check against an empty string")."""
    env = _compose_env("api") if source == "compose" else _k8s_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOFLOW_HOME", str(tmp_path))
    settings = af.Settings()
    client = af.Client(immediate=True, settings=settings)
    url, stop = start_server(create_app(client, settings))
    try:
        token = mint_token(settings, sub="ops", org="acme", scopes=["read"])
        reply = httpx.get(f"{url}/api/executions", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text
    finally:
        stop()
        client.close()
