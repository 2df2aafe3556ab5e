"""Running the app under uvicorn (what ``autoflow serve`` does)."""

from __future__ import annotations

import logging

import uvicorn

from autoflow.client import Client
from autoflow.config import Settings
from autoflow.server.app import create_app

__all__ = ["serve"]

log = logging.getLogger("autoflow.server")


def serve(client: Client, settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve ``client`` over HTTP until SIGINT/SIGTERM (uvicorn shuts down gracefully)."""
    app = create_app(client, settings)
    host = host or settings.api_host
    port = settings.api_port if port is None else port
    print(f"autoflow serve: http://{host}:{port} (dashboard /ui/, OpenAPI /docs) on {client.url}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, proxy_headers=False)
