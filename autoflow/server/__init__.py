"""``autoflow serve``: the REST API, webhooks, metrics and dashboard (FastAPI + uvicorn).

Needs the ``server`` extra: ``pip install 'autoflow[server]'``.

Example::

    import autoflow as af
    from autoflow.server import create_app

    app = create_app(af.Client("redis://localhost:6379/0"))   # an ASGI app for uvicorn
"""

from __future__ import annotations

try:
    import fastapi as _fastapi  # noqa: F401
    import jwt as _jwt  # noqa: F401
    import prometheus_client as _prometheus  # noqa: F401
    import uvicorn as _uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"autoflow.server needs the 'server' extra ({exc.name} is missing): pip install 'autoflow[server]'"
    ) from exc

from autoflow.server import metrics as metrics
from autoflow.server.app import ROUTERS, create_app
from autoflow.server.auth import Authenticator, Principal, mint_token
from autoflow.server.hooks import Hook, HookConfig
from autoflow.server.serve import serve

__all__ = ["ROUTERS", "Authenticator", "Hook", "HookConfig", "Principal", "create_app", "mint_token", "serve"]
