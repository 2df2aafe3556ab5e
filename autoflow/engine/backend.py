"""Choosing a backend from a URL: a store paired with a transport.

* ``None`` → ``AUTOFLOW_REDIS_URL``/``REDIS_HOST`` if set, else embedded SQLite under
  ``AUTOFLOW_HOME``;
* ``redis://``, ``rediss://``, ``unix://`` → :class:`RedisStore` + Huey on Redis;
* ``sqlite:///path/to/autoflow.db`` → :class:`SQLiteStore` + Huey on SQLite beside it;
* ``memory://`` → in-memory SQLite + the inline dispatcher (immediate mode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from autoflow import codec
from autoflow.config import Settings
from autoflow.engine.dispatch import HueyDispatcher
from autoflow.engine.inline import InlineDispatcher
from autoflow.errors import BackendError
from autoflow.store.base import Ready, Store
from autoflow.store.redis import RedisStore
from autoflow.store.sqlite import SQLiteStore

__all__ = ["Backend", "Dispatcher", "open_backend"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Dispatcher(Protocol):
    url: str
    node_handler: Callable[[str, str, int], None] | None
    admit_handler: Callable[[], None] | None

    def send(self, items: Sequence[Ready]) -> None: ...

    def queue_commands(self, items: Sequence[Ready], server: tuple[Any, ...]) -> list[tuple[Any, ...]] | None: ...

    def nudge(self, priority: int = 0) -> None: ...

    def backlog(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class Backend:
    """A store and the transport that goes with it."""

    kind: str  # "sqlite", "redis" or "memory"
    url: str
    store: Store
    dispatcher: Dispatcher

    def close(self) -> None:
        self.dispatcher.close()
        self.store.close()


def open_backend(url: str | None, settings: Settings) -> Backend:
    """Open the backend ``url`` names (see the module docstring); BackendError names the URL."""
    if url is None:
        url = settings.resolved_redis_url or f"sqlite:///{settings.home / 'autoflow.db'}"
    secret = settings.secret_bytes
    # Secrets this process holds are blanked wherever they would leave it (logs, errors).
    codec.register_secret(secret)
    codec.register_secret(settings.redis_password.get_secret_value() if settings.redis_password else None)
    codec.register_secret(codec.url_password(url))
    if url.startswith(REDIS_SCHEMES):
        store = RedisStore.from_url(
            url,
            namespace=settings.namespace,
            retention=settings.retention_seconds,
            functions=settings.redis_functions,
        )
        dispatcher = HueyDispatcher.redis(url, namespace=settings.namespace, secret=secret)
        return Backend("redis", store.url, store, dispatcher)
    if url == "memory://":
        return Backend("memory", url, SQLiteStore(":memory:"), InlineDispatcher())
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = Path(url[len("sqlite:///") :])  # sqlite:///relative.db, sqlite:////absolute.db
        sqlite_store = SQLiteStore(path)
        queue = path.with_name(path.stem + "-queue.db")
        sqlite_dispatcher = HueyDispatcher.sqlite(str(queue), namespace=settings.namespace, secret=secret)
        return Backend("sqlite", sqlite_store.url, sqlite_store, sqlite_dispatcher)
    raise BackendError(url, "unknown scheme; use redis://, rediss://, unix://, sqlite:/// or memory://")
