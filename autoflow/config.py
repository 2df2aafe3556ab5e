"""Settings from the environment (the seed's variables plus autoflow's own).

Read when a ``Client`` or worker is built, never at import; explicit arguments win.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """autoflow's configuration.

    Example::

        af.Settings()                                  # from the environment
        af.Settings(workflow_concurrency=50)           # explicit values win
        af.Client(settings=af.Settings(redis_url="redis://localhost:6379/0"))

    Environment: ``AUTOFLOW_REDIS_URL`` (wins over ``REDIS_HOST/PORT/PASSWORD/DB``),
    ``WORKFLOW_CONCURRENCY`` (5), ``NODE_CONCURRENCY`` (10), ``MONITORING_ENABLED``,
    ``MONITORING_PORT`` (3001), ``AUTOFLOW_HOME`` (~/.autoflow), ``AUTOFLOW_SECRET``,
    ``AUTOFLOW_NAMESPACE``, ``AUTOFLOW_RETENTION_SECONDS`` (7 days),
    ``AUTOFLOW_LEASE_SECONDS``, ``AUTOFLOW_REQUEUE_SECONDS``, ``AUTOFLOW_MAX_STALLS``.

    The REST API (``autoflow serve``, see docs/api.md): ``AUTOFLOW_API_HOST``,
    ``AUTOFLOW_API_PORT``, ``AUTOFLOW_JWT_SECRET`` (or the seed's ``JWT_SECRET``),
    ``AUTOFLOW_JWT_PUBLIC_KEY_FILE``, ``AUTOFLOW_JWT_ALGORITHMS``, ``AUTOFLOW_JWT_AUDIENCE``,
    ``AUTOFLOW_JWT_ISSUER``, ``AUTOFLOW_API_RATE_LIMIT``, ``AUTOFLOW_API_EXECUTE_RATE_LIMIT``,
    ``AUTOFLOW_API_MAX_BODY_BYTES``, ``AUTOFLOW_WEBHOOK_SECRET``, ``AUTOFLOW_WEBHOOK_ORGANIZATION``,
    ``AUTOFLOW_WEBHOOKS_FILE``.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    redis_url: str | None = Field(None, validation_alias=_env("AUTOFLOW_REDIS_URL", "redis_url"))
    redis_host: str | None = Field(None, validation_alias=_env("REDIS_HOST", "redis_host"))
    redis_port: int = Field(6379, validation_alias=_env("REDIS_PORT", "redis_port"))
    redis_password: SecretStr | None = Field(None, validation_alias=_env("REDIS_PASSWORD", "redis_password"))
    redis_db: int = Field(0, validation_alias=_env("REDIS_DB", "redis_db"))
    workflow_concurrency: int = Field(5, ge=1, validation_alias=_env("WORKFLOW_CONCURRENCY", "workflow_concurrency"))
    node_concurrency: int = Field(10, ge=1, validation_alias=_env("NODE_CONCURRENCY", "node_concurrency"))
    monitoring_enabled: bool = Field(False, validation_alias=_env("MONITORING_ENABLED", "monitoring_enabled"))
    monitoring_port: int = Field(3001, validation_alias=_env("MONITORING_PORT", "monitoring_port"))
    home: Path = Field(Path("~/.autoflow"), validation_alias=_env("AUTOFLOW_HOME", "home"))
    secret: SecretStr | None = Field(None, validation_alias=_env("AUTOFLOW_SECRET", "secret"))
    namespace: str = Field(
        "autoflow", pattern=r"^[A-Za-z0-9_]{1,40}$", validation_alias=_env("AUTOFLOW_NAMESPACE", "namespace")
    )
    retention_seconds: float = Field(
        7 * 24 * 3600, gt=0, validation_alias=_env("AUTOFLOW_RETENTION_SECONDS", "retention_seconds")
    )
    lease_seconds: float = Field(15.0, gt=0, validation_alias=_env("AUTOFLOW_LEASE_SECONDS", "lease_seconds"))
    requeue_seconds: float = Field(30.0, gt=0, validation_alias=_env("AUTOFLOW_REQUEUE_SECONDS", "requeue_seconds"))
    max_stalls: int = Field(3, ge=0, validation_alias=_env("AUTOFLOW_MAX_STALLS", "max_stalls"))
    # -- the REST API (autoflow serve; docs/api.md, docs/webhooks.md) ----------------------
    api_host: str = Field("127.0.0.1", validation_alias=_env("AUTOFLOW_API_HOST", "api_host"))
    api_port: int = Field(8000, ge=0, le=65535, validation_alias=_env("AUTOFLOW_API_PORT", "api_port"))
    jwt_secret: SecretStr | None = Field(None, validation_alias=_env("AUTOFLOW_JWT_SECRET", "JWT_SECRET", "jwt_secret"))
    jwt_public_key_file: Path | None = Field(
        None, validation_alias=_env("AUTOFLOW_JWT_PUBLIC_KEY_FILE", "jwt_public_key_file")
    )
    jwt_algorithms: str | None = Field(None, validation_alias=_env("AUTOFLOW_JWT_ALGORITHMS", "jwt_algorithms"))
    jwt_audience: str | None = Field(None, validation_alias=_env("AUTOFLOW_JWT_AUDIENCE", "jwt_audience"))
    jwt_issuer: str | None = Field(None, validation_alias=_env("AUTOFLOW_JWT_ISSUER", "jwt_issuer"))
    api_rate_limit: str = Field("50/s", validation_alias=_env("AUTOFLOW_API_RATE_LIMIT", "api_rate_limit"))
    api_execute_rate_limit: str = Field(
        "20/s", validation_alias=_env("AUTOFLOW_API_EXECUTE_RATE_LIMIT", "api_execute_rate_limit")
    )
    api_max_body_bytes: int = Field(
        1 << 20, gt=0, validation_alias=_env("AUTOFLOW_API_MAX_BODY_BYTES", "api_max_body_bytes")
    )
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("AUTOFLOW_WEBHOOK_SECRET", "webhook_secret"))
    webhooks_file: Path | None = Field(None, validation_alias=_env("AUTOFLOW_WEBHOOKS_FILE", "webhooks_file"))
    webhook_organization: str | None = Field(
        None, validation_alias=_env("AUTOFLOW_WEBHOOK_ORGANIZATION", "webhook_organization")
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_redis_url(self) -> str | None:
        """``AUTOFLOW_REDIS_URL``, else a URL built from ``REDIS_HOST`` and friends, else None."""
        if self.redis_url:
            return self.redis_url
        if not self.redis_host:
            return None
        auth = ""
        if self.redis_password is not None:
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def secret_bytes(self) -> bytes | None:
        return self.secret.get_secret_value().encode() if self.secret else None
