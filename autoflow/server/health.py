"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (the backend answers too)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from autoflow.server.deps import ClientDep
from autoflow.server.errors import ERROR_RESPONSES, ApiError

__all__ = ["PUBLIC", "router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    backend: str | None = None


PUBLIC: dict[str, object] = {"security": []}  # probes need no token


@router.get("/healthz", response_model=Health, response_model_exclude_none=True, openapi_extra=PUBLIC)
def healthz() -> Health:
    """Liveness: the process serves requests (no backend call)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: ERROR_RESPONSES[503]}, openapi_extra=PUBLIC)
async def readyz(client: ClientDep) -> Health:
    """Readiness: the store answers (one cheap read); 503 naming the backend if not."""
    try:
        await run_in_threadpool(client.backend.store.run_status, "readyz-probe")
    except Exception as exc:
        raise ApiError(503, f"backend {client.url} is not ready: {type(exc).__name__}") from None
    return Health(status="ready", backend=client.backend.kind)
