"""Settings read only the documented environment variables and refuse bad ones clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

import autoflow as af


def test_generic_environment_variables_are_not_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUTOFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in {
        "SECRET": "generic-secret",
        "NAMESPACE": "kube-system",
        "REDIS_URL": "redis://elsewhere:1/0",
        "redis_url": "redis://lower:1/0",
        "home": "/nowhere",
        "secret": "lower-secret",
        "LEASE_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = af.Settings()
    assert settings.home == tmp_path / ".autoflow"  # not $HOME itself
    assert settings.secret is None
    assert settings.namespace == "autoflow"
    assert settings.resolved_redis_url is None
    assert settings.lease_seconds == 15.0
    with af.Client(settings=settings) as client:  # NAMESPACE=kube-system does not break the embedded client
        assert str(tmp_path / ".autoflow") in client.url


def test_documented_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOFLOW_SECRET", "s3")
    monkeypatch.setenv("AUTOFLOW_NAMESPACE", "ns1")
    monkeypatch.setenv("AUTOFLOW_MAX_VALUE_BYTES", "2048")
    monkeypatch.setenv("NODE_CONCURRENCY", "3")
    settings = af.Settings()
    assert settings.secret_bytes == b"s3" and settings.namespace == "ns1"
    assert settings.limits.max_value_bytes == 2048 and settings.node_concurrency == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTOFLOW_NAMESPACE", "kube-system"), ("WORKFLOW_CONCURRENCY", "many"), ("AUTOFLOW_LEASE_SECONDS", "-1")],
)
def test_a_bad_setting_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(af.ConfigError, match=name):
        af.Settings()
    with pytest.raises(af.ConfigError, match=name):
        af.Client()


def test_settings_repr_hides_every_secret() -> None:
    settings = af.Settings(
        redis_url="redis://:url-pass-9@h:1/0", redis_password="pw-part-9", secret="signing-key-9", namespace="a"
    )
    text = repr(settings) + str(settings) + str(settings.model_dump())
    for secret in ("url-pass-9", "pw-part-9", "signing-key-9"):
        assert secret not in text
    assert settings.resolved_redis_url == "redis://:url-pass-9@h:1/0"
