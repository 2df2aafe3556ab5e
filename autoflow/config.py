"""Settings from the environment (the seed's variables plus autoflow's own).

Read when a ``Client`` or worker is built, never at import; explicit arguments win.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from autoflow.errors import ConfigError

__all__ = ["Limits", "Settings"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what a definition or an input may ask for; past them ``execute`` (or
    the node) is refused with a clear error instead of costing unbounded time or memory.

    ``max_value_bytes``: one stored JSON value (run inputs, trigger data, a node's output,
    one map item); ``max_map_items``: items of one ``.map``; ``max_nodes``: nodes of one
    definition (and the highest list index an edge may address); ``max_depth``: nesting
    of JSON values; ``max_priority``: the absolute value of a priority.
    """

    max_value_bytes: int = 16 * 1024 * 1024
    max_map_items: int = 100_000
    max_nodes: int = 10_000
    max_depth: int = 64
    max_priority: int = 1_000_000


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
    ``AUTOFLOW_LEASE_SECONDS``, ``AUTOFLOW_REQUEUE_SECONDS``, ``AUTOFLOW_MAX_STALLS``,
    ``AUTOFLOW_MAX_VALUE_BYTES`` (16 MiB), ``AUTOFLOW_MAX_MAP_ITEMS`` (100,000),
    ``AUTOFLOW_MAX_NODES`` (10,000), ``AUTOFLOW_SCHEDULER`` (true: an embedded client
    fires schedules and database triggers), ``AUTOFLOW_SCHEDULER_LEASE_SECONDS`` (10),
    ``AUTOFLOW_REDIS_FUNCTIONS`` (true: run transitions as a Redis function library
    where the server has functions; false: as scripts, e.g. behind a proxy that refuses
    ``FUNCTION``).
    Only these names are read: never a bare ``HOME``,
    ``SECRET`` or ``REDIS_URL``. An invalid value raises :class:`~autoflow.ConfigError`
    naming the variable.

    The REST API (``autoflow serve``, see docs/api.md): ``AUTOFLOW_API_HOST``,
    ``AUTOFLOW_API_PORT``, ``AUTOFLOW_JWT_SECRET``, ``AUTOFLOW_JWT_PUBLIC_KEY_FILE``,
    ``AUTOFLOW_JWT_ALGORITHMS``, ``AUTOFLOW_JWT_AUDIENCE``, ``AUTOFLOW_JWT_ISSUER``,
    ``AUTOFLOW_API_RATE_LIMIT``, ``AUTOFLOW_API_EXECUTE_RATE_LIMIT``,
    ``AUTOFLOW_API_MAX_BODY_BYTES``, ``AUTOFLOW_API_MAX_BULK_ITEMS``, ``AUTOFLOW_WEBHOOK_SECRET``,
    ``AUTOFLOW_WEBHOOK_ORGANIZATION``, ``AUTOFLOW_WEBHOOKS_FILE``.
    """

    # Fields are read from their documented variable only (validation_alias); keyword
    # arguments by field name are mapped to it in __init__, so that the environment is
    # never searched for a bare field name such as HOME or SECRET.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=True)

    redis_url: SecretStr | None = Field(None, validation_alias="AUTOFLOW_REDIS_URL")
    redis_host: str | None = Field(None, validation_alias="REDIS_HOST")
    redis_port: int = Field(6379, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(None, validation_alias="REDIS_PASSWORD")
    redis_db: int = Field(0, validation_alias="REDIS_DB")
    workflow_concurrency: int = Field(5, ge=1, validation_alias="WORKFLOW_CONCURRENCY")
    node_concurrency: int = Field(10, ge=1, validation_alias="NODE_CONCURRENCY")
    monitoring_enabled: bool = Field(False, validation_alias="MONITORING_ENABLED")
    monitoring_port: int = Field(3001, validation_alias="MONITORING_PORT")
    home: Path = Field(Path("~/.autoflow"), validation_alias="AUTOFLOW_HOME")
    secret: SecretStr | None = Field(None, validation_alias="AUTOFLOW_SECRET")
    namespace: str = Field("autoflow", pattern=r"^[A-Za-z0-9_]{1,40}$", validation_alias="AUTOFLOW_NAMESPACE")
    retention_seconds: float = Field(7 * 24 * 3600, gt=0, validation_alias="AUTOFLOW_RETENTION_SECONDS")
    lease_seconds: float = Field(15.0, gt=0, validation_alias="AUTOFLOW_LEASE_SECONDS")
    requeue_seconds: float = Field(30.0, gt=0, validation_alias="AUTOFLOW_REQUEUE_SECONDS")
    max_stalls: int = Field(3, ge=0, validation_alias="AUTOFLOW_MAX_STALLS")
    max_value_bytes: int = Field(Limits.max_value_bytes, ge=1024, validation_alias="AUTOFLOW_MAX_VALUE_BYTES")
    max_map_items: int = Field(Limits.max_map_items, ge=1, validation_alias="AUTOFLOW_MAX_MAP_ITEMS")
    max_nodes: int = Field(Limits.max_nodes, ge=1, validation_alias="AUTOFLOW_MAX_NODES")
    redis_functions: bool = Field(True, validation_alias="AUTOFLOW_REDIS_FUNCTIONS")
    # Schedules and database triggers (docs/schedules.md): does an embedded client run the
    # ticker and the listeners, and how long a ticker's / listener's lease lasts.
    scheduler: bool = Field(True, validation_alias="AUTOFLOW_SCHEDULER")
    scheduler_lease_seconds: float = Field(10.0, gt=0, validation_alias="AUTOFLOW_SCHEDULER_LEASE_SECONDS")
    # -- the REST API (autoflow serve; docs/api.md, docs/webhooks.md) ----------------------
    api_host: str = Field("127.0.0.1", validation_alias="AUTOFLOW_API_HOST")
    api_port: int = Field(8000, ge=0, le=65535, validation_alias="AUTOFLOW_API_PORT")
    jwt_secret: SecretStr | None = Field(None, validation_alias="AUTOFLOW_JWT_SECRET")
    jwt_public_key_file: Path | None = Field(None, validation_alias="AUTOFLOW_JWT_PUBLIC_KEY_FILE")
    jwt_algorithms: str | None = Field(None, validation_alias="AUTOFLOW_JWT_ALGORITHMS")
    jwt_audience: str | None = Field(None, validation_alias="AUTOFLOW_JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, validation_alias="AUTOFLOW_JWT_ISSUER")
    api_rate_limit: str = Field("50/s", validation_alias="AUTOFLOW_API_RATE_LIMIT")
    api_execute_rate_limit: str = Field("20/s", validation_alias="AUTOFLOW_API_EXECUTE_RATE_LIMIT")
    api_max_body_bytes: int = Field(1 << 20, gt=0, validation_alias="AUTOFLOW_API_MAX_BODY_BYTES")
    # runs one execute-many request may start (413 past it); the body size limit applies too
    api_max_bulk_items: int = Field(1000, ge=1, le=10_000, validation_alias="AUTOFLOW_API_MAX_BULK_ITEMS")
    webhook_secret: SecretStr | None = Field(None, validation_alias="AUTOFLOW_WEBHOOK_SECRET")
    webhook_organization: str | None = Field(None, validation_alias="AUTOFLOW_WEBHOOK_ORGANIZATION")
    webhooks_file: Path | None = Field(None, validation_alias="AUTOFLOW_WEBHOOKS_FILE")

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(type(self).model_fields)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(type(self).model_fields)}")
        by_alias = {str(type(self).model_fields[name].validation_alias): value for name, value in values.items()}
        try:
            super().__init__(**by_alias)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def limits(self) -> Limits:
        return Limits(self.max_value_bytes, self.max_map_items, self.max_nodes)

    @property
    def resolved_redis_url(self) -> str | None:
        """``AUTOFLOW_REDIS_URL``, else a URL built from ``REDIS_HOST`` and friends, else None."""
        if self.redis_url:
            return self.redis_url.get_secret_value()
        if not self.redis_host:
            return None
        auth = ""
        if self.redis_password is not None:
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def secret_bytes(self) -> bytes | None:
        return self.secret.get_secret_value().encode() if self.secret else None


def _explain(exc: ValidationError) -> str:
    """One line per bad setting, naming the environment variable (values are not shown:
    they may be secrets)."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        known = Settings.model_fields.get(field)
        alias = known.validation_alias if known is not None else None
        name = alias if isinstance(alias, str) else field
        lines.append(f"{name}: {error['msg']}")
    return "invalid autoflow settings: " + "; ".join(lines)
